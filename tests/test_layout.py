"""The layout keeps its promises: no import circles, ``method/`` below the plumbing, small
modules, one plugin API, every deferred builder resolvable, ``--init`` read once."""

import ast
import dataclasses
import functools
import re

import pytest

import tapweight
from bench.imports import REPO, circles, core_dirs, module_graph, room
from tapweight.job import checkpoint
from tapweight.plugin import manager as plugins
from tapweight.plugin.lazy import deferred

PLUGIN_PACKAGES = [REPO / "tapweight_mol", REPO / "tapweight_nlp",
                   *sorted(p for p in (REPO / "plugins").glob("*/tapweight_*") if p.is_dir())]
TUTORIAL = REPO / "docs" / "writing-plugins.md"


def test_no_module_imports_itself_back_through_others():
    assert circles(module_graph(core_dirs())) == []


def test_no_module_names_a_type_of_one_that_imports_it():
    """Not through ``if TYPE_CHECKING:`` imports either (the finder counts them with ``types``)."""
    assert circles(module_graph(core_dirs(), types=True)) == []


def test_the_circle_finder_finds_a_circle(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg import b\n")
    (package / "b.py").write_text("def f():\n    from pkg.a import x\n")  # lazy: still an arrow
    (package / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n")
    graph = module_graph([package])
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.a"} and graph["pkg.c"] == set()
    assert circles(graph) == [["pkg.a", "pkg.b"]]
    assert module_graph([package], types=True)["pkg.c"] == {"pkg.a"}


def test_the_method_imports_nothing_from_the_run_plumbing_or_the_commands():
    graph = module_graph(core_dirs())
    below = {(m, t) for m, targets in graph.items() if room(m) == "method"
             for t in targets if room(t) in ("job", "commands")}
    assert below == set()


def test_no_module_is_longer_than_400_lines():
    long = {str(f.relative_to(REPO)): n for folder in [*core_dirs(), REPO / "bench"]
            for f in folder.rglob("*.py") if (n := len(f.read_text().splitlines())) > 400}
    assert long == {}


def _core_imports(tree: ast.AST) -> list[str]:
    """What a plugin's code imports from the core: ``tapweight.x`` modules, and the names
    it takes from ``tapweight`` itself."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "tapweight"]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "tapweight":
            found += [node.module if node.module != "tapweight" else f"tapweight:{a.name}" for a in node.names]
    return found


def _plugin_sources() -> dict[str, str]:
    sources = {str(f.relative_to(REPO)): f.read_text() for p in PLUGIN_PACKAGES for f in p.rglob("*.py")}
    blocks = re.findall(r"```python\n(.*?)```", TUTORIAL.read_text(), flags=re.S)
    sources.update({f"{TUTORIAL.name} block {i}": b for i, b in enumerate(blocks) if not b.startswith("# tests/")})
    return sources


def test_plugins_import_only_what_tapweight_exports():
    """The built-in domains, the tabular plugin and the tutorial's plugin use ``from tapweight
    import ...`` only, and only names in ``tapweight.__all__``: the one plugin API."""
    outside = {where: bad for where, source in _plugin_sources().items()
               if (bad := [i for i in _core_imports(ast.parse(source))
                           if not i.startswith("tapweight:") or i.split(":")[1] not in tapweight.__all__])}
    assert outside == {}


def test_the_plugin_api_check_catches_an_internal_import():
    assert _core_imports(ast.parse("from tapweight.job.loading import plain\nimport tapweight.paths\n"
                                   "from tapweight import hookimpl")) == [
        "tapweight.job.loading", "tapweight.paths", "tapweight:hookimpl"]


def test_every_name_tapweight_exports_is_there():
    assert [name for name in tapweight.__all__ if getattr(tapweight, name, None) is None] == []


def _deferred_in(value, seen: set) -> list[deferred]:
    """Every `deferred` reachable from a registered spec (fields, dicts, tuples, partials)."""
    if id(value) in seen:
        return []
    seen.add(id(value))
    if isinstance(value, deferred):
        return [value]
    if isinstance(value, functools.partial):
        return _deferred_in(value.func, seen) + _deferred_in(value.args, seen)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [d for f in dataclasses.fields(value) for d in _deferred_in(getattr(value, f.name), seen)]
    if isinstance(value, dict):
        return [d for v in value.values() for d in _deferred_in(v, seen)]
    if isinstance(value, (list, tuple)):
        return [d for v in value for d in _deferred_in(v, seen)]
    return []


def test_every_registered_deferred_builder_resolves():
    """A typo in ``deferred("pkg.mod:fn")`` shows here, not at a user's first run."""
    registry = plugins.build_registry()
    found = [d for table in registry.tables.values() for spec in table.values() for d in _deferred_in(spec, set())]
    assert len(found) >= 4  # the core's own: two probes, two trackers
    broken = {}
    for item in found:
        try:
            assert callable(item.resolve())
        except (ImportError, AttributeError, AssertionError) as err:
            broken[item.target] = repr(err)
    assert broken == {}


def test_init_is_read_once_for_the_check_and_every_seed(toy, tmp_path, monkeypatch):
    from tests.test_cli import run_toy

    source = run_toy(tmp_path, "--steps", "2", name="source")
    reads = []
    load_file = checkpoint.load_file
    monkeypatch.setattr(checkpoint, "load_file", lambda path: reads.append(path) or load_file(path))
    run_toy(tmp_path, "--steps", "2", "--seeds", "0,1", "--init", str(source / "seed0" / "backbone.safetensors"))
    assert len(reads) == 1
    with checkpoint.reading_once():  # outside a run each call reads; inside, a changed file is read again
        first = checkpoint.read_weights(str(source / "seed0" / "backbone.safetensors"))
        first.clear()  # the caller's own dict: the kept one is untouched
        assert checkpoint.read_weights(str(source / "seed0" / "backbone.safetensors"))
    assert len(reads) == 2


@pytest.mark.parametrize("name", ["load_into", "LoadReport", "container", "plain", "IMAGEMOL_FINETUNED"])
def test_the_lazy_plugin_helpers_load_on_first_use(name):
    assert getattr(tapweight, name) is getattr(__import__("tapweight.job.loading", fromlist=[name]), name)
