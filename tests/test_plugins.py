"""The plugin surface: every hook exercised and documented, broken plugins isolated."""

import inspect
import re
import types
from pathlib import Path

import pytest

from tapweight import BackboneSpec, Domain, ObjectiveSpec, TaskSpec, hookimpl
from tapweight.errors import TapweightError
from tapweight.plugin import hookspecs
from tapweight.plugin import manager as plugins
from tapweight.plugin.registry import KINDS

HOOKS = sorted(n for n in dir(hookspecs) if n.startswith("register_"))
DOCS = Path(__file__).parents[1] / "docs" / "hooks.md"


def test_plugin_hooks_have_tests(toy):
    """The toy plugin implements every hook and each one's registrations arrive."""
    implemented = {c.name for c in plugins.pm.get_hookcallers(toy)}
    assert implemented == set(HOOKS)
    registry = plugins.build_registry()
    for kind in KINDS:
        assert any(owner == "toy" for (k, _), owner in registry.owners.items() if k == kind), kind
    from tapweight.commands.cli import _add_plugin_commands, app

    _add_plugin_commands()
    assert "toy-hello" in [c.name for c in app.registered_commands]


def test_plugin_hooks_are_documented():
    text = DOCS.read_text()
    for name in HOOKS:
        params = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
        assert f"`{name}({params})`" in text, name
    documented = set(re.findall(r"^## `(register_\w+)\(", text, flags=re.M))
    assert documented == set(HOOKS)


def _plugin(name, **hooks):
    module = types.ModuleType(name)
    for hook, fn in hooks.items():
        setattr(module, hook, hookimpl(fn))
    return module


@pytest.fixture
def cleanup():
    names = []
    yield names
    for name in names:
        if plugins.pm.has_plugin(name):
            plugins.pm.unregister(name=name)
    plugins._load_problems[:] = [p for p in plugins._load_problems if p.plugin not in names]


def test_misspelt_hook_is_refused_with_a_hint(toy, cleanup):
    bad = _plugin("typo", register_objectivs=lambda register: None)
    cleanup.append("typo")
    assert not plugins.register_plugin(bad, "typo")
    registry = plugins.build_registry()
    problem = next(p for p in registry.problems if p.plugin == "typo")
    assert "register_objectivs" in problem.message and "register_objectives" in problem.message
    assert "toy/blobs" in registry.names("tasks")  # the others still load


def test_duplicate_name_is_reported_and_the_plugin_dropped(toy, cleanup):
    def backbones(register):
        register(BackboneSpec("toy.other", lambda cfg, data: None))
        register(BackboneSpec("toy.mlp", lambda cfg, data: None))

    cleanup.append("dup")
    assert plugins.register_plugin(_plugin("dup", register_backbones=backbones), "dup")
    registry = plugins.build_registry()
    problem = next(p for p in registry.problems if p.plugin == "dup")
    assert "'toy.mlp' is already registered by plugin 'toy'" in problem.message
    assert "toy.other" not in registry.names("backbones")  # nothing half-registered
    assert registry.owners[("backbones", "toy.mlp")] == "toy"


def test_plugin_that_raises_is_reported_with_traceback(toy, cleanup):
    def boom(register):
        raise RuntimeError("kaput")

    cleanup.append("boom")
    plugins.register_plugin(_plugin("boom", register_objectives=boom), "boom")
    registry = plugins.build_registry()
    problem = next(p for p in registry.problems if p.plugin == "boom")
    assert "kaput" in problem.message and "Traceback" in problem.traceback
    assert "toy.denoise" in registry.names("objectives")


def test_names_must_be_namespaced(toy, cleanup):
    cleanup.append("bare")
    plugins.register_plugin(_plugin("bare", register_objectives=lambda register: register(
        ObjectiveSpec("jpp", lambda b, c, cfg: None))), "bare")
    problem = next(p for p in plugins.build_registry().problems if p.plugin == "bare")
    assert "must be namespaced" in problem.message


def test_short_names_resolve_inside_the_domain(toy):
    registry = plugins.build_registry()
    assert registry.get("objectives", "denoise", "toy").name == "toy.denoise"
    assert registry.get("heads", "linear", "toy").name == "core.linear"
    with pytest.raises(TapweightError, match="Did you mean 'toy.denoise'"):
        registry.get("objectives", "toy.denoize", "toy")


class FakeDist:
    def __init__(self, requires, name="tapweight"):
        self.requires = requires
        self.metadata = {"Name": name}


class FakeEntryPoint:
    """An entry point whose ``load`` raises ``error`` or returns ``module``."""

    def __init__(self, name, error=None, requires=(), module=None, dist="tapweight"):
        self.name, self.error, self.module = name, error, module
        self.dist = FakeDist(list(requires), dist)

    def load(self):
        if self.error is not None:
            raise self.error
        return self.module


@pytest.fixture
def entry_points(monkeypatch):
    """Replace entry-point discovery with fakes; restore the loader's state afterwards."""
    monkeypatch.setattr(plugins, "_loaded", False)
    monkeypatch.setattr(plugins, "_load_problems", [])
    monkeypatch.setattr(plugins, "_order", dict(plugins._order))
    before = {name for name, _ in plugins.pm.list_name_plugin()}

    def install(*eps):
        monkeypatch.setattr(plugins.md, "entry_points", lambda group: list(eps))

    yield install
    for name, _ in plugins.pm.list_name_plugin():
        if name not in before:
            plugins.pm.unregister(name=name)


def _domain_plugin(name, domain, task, extra_task=None):
    """A plugin module registering ``domain`` and the tasks ``task`` (and ``extra_task``)."""
    from tests.toy_plugin import build_data

    def domains(register):
        register(Domain(domain, f"{name}'s domain", object, backbone="x.y", objectives=(), build_data=build_data))

    def tasks(register):
        for t in (task, extra_task):
            if t:
                register(TaskSpec(t.split("/")[0], t.split("/")[1], "x.y", "random", "bce", "roc_auc"))

    return _plugin(name, register_domains=domains, register_tasks=tasks)


def test_first_registration_wins_whatever_order_pluggy_calls_hooks(toy, cleanup):
    """pluggy orders hook implementations by its own rules (a ``trylast`` one is listed before
    all others); registries fill in plugin order anyway: a newcomer claiming toy's task is
    reported and dropped, and toy keeps its whole domain."""
    late = types.ModuleType("late")
    late.register_tasks = hookimpl(trylast=True)(
        lambda register: register(TaskSpec("toy", "blobs", "toy.blobs", "random", "bce", "roc_auc")))
    cleanup.append("late")
    assert plugins.register_plugin(late, "late")
    registry = plugins.build_registry()
    assert registry.owners[("tasks", "toy/blobs")] == "toy"
    assert {"toy/blobs", "toy/blobs-ce", "toy/blobs-reg"} <= set(registry.names("tasks"))
    (problem,) = [p for p in registry.problems if p.plugin in ("toy", "late")]
    assert problem.plugin == "late" and "'toy/blobs' is already registered by plugin 'toy'" in problem.message


def test_an_entry_point_cannot_shadow_a_builtin_domain(entry_points):
    """Another distribution's entry point named like a built-in is never loaded, even when it
    is found first; the built-in loads and the newcomer is reported."""
    evil = _domain_plugin("evil", "shade", "shade/grab")
    builtin = _domain_plugin("builtin", "shade", "shade/own")
    entry_points(FakeEntryPoint("shade", module=evil, dist="tapweight-evil"),
                 FakeEntryPoint("shade", module=builtin))
    registry = plugins.build_registry()
    assert registry.owners[("domains", "shade")] == "shade" and "shade/own" in registry.names("tasks")
    assert "shade/grab" not in registry.names("tasks")
    (problem,) = registry.problems
    assert problem.plugin == "shade (tapweight-evil)"
    assert "the name belongs to tapweight's built-in domain" in problem.message


@pytest.mark.parametrize("raised,shown", [(SystemExit(3), "SystemExit(3)"),
                                          (KeyboardInterrupt(), "KeyboardInterrupt()")])
def test_a_plugin_that_exits_while_imported_is_contained(entry_points, raised, shown):
    entry_points(FakeEntryPoint("quitter", raised, dist="tapweight-quitter"))
    registry = plugins.build_registry()
    (problem,) = registry.problems
    assert problem.plugin == "quitter" and problem.message == f"import raised {shown}"
    assert "core.linear" in registry.names("heads")  # the command line goes on


def test_plugin_commands_cannot_replace_the_builtin_ones(cleanup, caplog):
    from tapweight.commands import cli as cli_module
    from tapweight.commands import training

    def commands(cli):
        @cli.command("run")
        def hijack():
            """Not the real run."""

        @cli.command("extra-hello")
        def hello():
            """A new command."""

    def broken(cli):
        @cli.command("half-added")
        def half():
            """Added before the plugin fails."""
        raise RuntimeError("kaput")

    cleanup.extend(["hijacker", "broken"])
    plugins.register_plugin(_plugin("hijacker", register_commands=commands), "hijacker")
    plugins.register_plugin(_plugin("broken", register_commands=broken), "broken")
    before = list(cli_module.app.registered_commands)
    try:
        cli_module._add_plugin_commands()
        names = [cli_module._command_name(c) for c in cli_module.app.registered_commands]
        assert names.count("run") == 1 and "extra-hello" in names and "half-added" not in names
        run = next(c for c in cli_module.app.registered_commands if cli_module._command_name(c) == "run")
        assert run.callback is training.run
        assert "plugin hijacker: command 'run' is taken" in caplog.text
        assert "plugin broken: register_commands failed" in caplog.text
    finally:
        cli_module.app.registered_commands[:] = before


def test_missing_extra_names_the_pip_command(entry_points):
    err = ModuleNotFoundError("No module named 'rdkit'", name="rdkit")
    entry_points(FakeEntryPoint("chem", err, ['not-installed-pkg-xyz>=1; extra == "chem"', "numpy"]))
    registry = plugins.build_registry()
    (problem,) = registry.problems
    assert problem.fix == "pip install 'tapweight[chem]'"
    assert "not-installed-pkg-xyz" in problem.message
    with pytest.raises(TapweightError, match=r"domain 'chem' is unavailable.*pip install 'tapweight\[chem\]'"):
        registry.require_domain("chem")


def test_list_domains_prints_the_fix_whole(entry_points, capsys):
    """rich reads "[chem]" as markup: unescaped, the fix printed as pip install 'tapweight'."""
    from tests.test_cli import cli

    err = ModuleNotFoundError("No module named 'rdkit'", name="rdkit")
    entry_points(FakeEntryPoint("chem", err, ['not-installed-pkg-xyz>=1; extra == "chem"']))
    assert cli("list", "domains") == 0
    assert "pip install 'tapweight[chem]'" in capsys.readouterr().out


def test_other_import_errors_keep_their_traceback(entry_points):
    entry_points(FakeEntryPoint("broken", ValueError("bad plugin code")),
                 FakeEntryPoint("gone", ModuleNotFoundError("no", name="internal_mod")))
    registry = plugins.build_registry()
    assert {p.plugin for p in registry.problems} == {"broken", "gone"}
    assert all("Traceback" in p.traceback and not p.fix for p in registry.problems)
    assert "core.linear" in registry.names("heads")  # the core still works


def test_allow_list_environment_variable(entry_points, monkeypatch):
    entry_points(FakeEntryPoint("a", ValueError("a")), FakeEntryPoint("b", ValueError("b")))
    monkeypatch.setenv("TAPWEIGHT_LOAD_PLUGINS", "b")
    assert [p.plugin for p in plugins.build_registry().problems] == ["b"]


def test_builtin_domains_load_or_name_their_extra():
    """With its extra installed a built-in domain loads; without, it names the pip command."""
    import importlib.util

    registry = plugins.build_registry()
    for domain, module in (("mol", "rdkit"), ("nlp", "transformers")):
        if importlib.util.find_spec(module) is None:
            problem = next(p for p in registry.problems if p.plugin == domain)
            assert problem.fix == f"pip install 'tapweight[{domain}]'"
        else:
            assert domain in registry.names("domains"), registry.problems


def test_an_unknown_first_party_domain_names_its_pip_command(monkeypatch, tmp_path):
    """The tabular example plugin lives in the repository, not in the tapweight distribution:
    asked for and missing, the error says how to install it (from the checkout when tapweight
    runs from one, relative to the current folder when inside it). The core finds it in the
    checkout's plugins/ folder, not in a list of its own."""
    from tapweight.plugin import registry

    checkout = Path(registry.__file__).resolve().parents[2]
    assert registry.in_repository() == {"tabular": ("tapweight_tabular", "plugins/tapweight-tabular")}
    monkeypatch.setattr(registry, "in_repository", lambda: {"tabular": ("no_such_module_here",
                                                                         "plugins/tapweight-tabular")})
    empty = registry.Registry()
    monkeypatch.chdir(checkout)
    with pytest.raises(TapweightError) as err:
        empty.require_domain("tabular")
    assert str(err.value) == ("unknown domain 'tabular' (available: none). It is the example plugin in tapweight's "
                              "repository, installed on its own: pip install -e ./plugins/tapweight-tabular")
    monkeypatch.chdir(tmp_path)  # outside the checkout: its full path
    with pytest.raises(TapweightError, match=re.escape(f"pip install -e {checkout}/plugins/tapweight-tabular")):
        empty.require_domain("tabular")
    monkeypatch.setattr(registry, "in_repository", lambda: {"tabular": ("json", "plugins/tapweight-tabular")})
    with pytest.raises(TapweightError, match="json is installed but did not load: see `tapweight plugins`"):
        empty.require_domain("tabular")
    with pytest.raises(TapweightError, match=r"^unknown domain 'ghost' \(available: none\)\. See `tapweight plugins`"):
        empty.require_domain("ghost")
