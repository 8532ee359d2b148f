"""The plugin surface: every hook exercised and documented, broken plugins isolated."""

import inspect
import re
import types
from pathlib import Path

import pytest

from tapweight import BackboneSpec, ObjectiveSpec, hookimpl, hookspecs, plugins
from tapweight.errors import TapweightError
from tapweight.registry import KINDS

HOOKS = sorted(n for n in dir(hookspecs) if n.startswith("register_"))
DOCS = Path(__file__).parents[1] / "docs" / "hooks.md"


def test_plugin_hooks_have_tests(toy):
    """The toy plugin implements every hook and each one's registrations arrive."""
    implemented = {c.name for c in plugins.pm.get_hookcallers(toy)}
    assert implemented == set(HOOKS)
    registry = plugins.build_registry()
    for kind in KINDS:
        assert any(owner == "toy" for (k, _), owner in registry.owners.items() if k == kind), kind
    from tapweight.cli import _add_plugin_commands, app

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
    def __init__(self, requires):
        self.requires = requires
        self.metadata = {"Name": "tapweight"}


class FakeEntryPoint:
    def __init__(self, name, error, requires=()):
        self.name, self.error, self.dist = name, error, FakeDist(list(requires))

    def load(self):
        raise self.error


@pytest.fixture
def entry_points(monkeypatch):
    """Replace entry-point discovery with fakes; restore the loader's state afterwards."""
    monkeypatch.setattr(plugins, "_loaded", False)
    monkeypatch.setattr(plugins, "_load_problems", [])

    def install(*eps):
        monkeypatch.setattr(plugins.md, "entry_points", lambda group: list(eps))

    return install


def test_missing_extra_names_the_pip_command(entry_points):
    err = ModuleNotFoundError("No module named 'rdkit'", name="rdkit")
    entry_points(FakeEntryPoint("chem", err, ['not-installed-pkg-xyz>=1; extra == "chem"', "numpy"]))
    registry = plugins.build_registry()
    (problem,) = registry.problems
    assert problem.fix == "pip install 'tapweight[chem]'"
    assert "not-installed-pkg-xyz" in problem.message
    with pytest.raises(TapweightError, match=r"domain 'chem' is unavailable.*pip install 'tapweight\[chem\]'"):
        registry.require_domain("chem")


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
