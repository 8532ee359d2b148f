"""The plugin as tapweight meets it: found through its entry point, public API only."""

import ast
import importlib.metadata as md
from pathlib import Path

import tapweight
from tapweight.plugin.manager import build_registry

PACKAGE = Path(__file__).parents[1] / "tapweight_tabular"
PUBLIC = set(tapweight.__all__)  # what tapweight exports at top level


def test_entry_point_is_declared():
    (ep,) = md.entry_points(group="tapweight", name="tabular")
    assert ep.value == "tapweight_tabular.plugin"


def test_registry_lists_the_domain_and_everything_it_brings():
    registry = build_registry()
    assert "tabular" in registry.names("domains")
    assert {"tabular/breast-cancer", "tabular/wine", "tabular/digits", "tabular/diabetes"} <= set(
        registry.names("tasks"))
    assert {"tabular.mfr", "tabular.denoise", "tabular.scarf"} <= set(registry.names("objectives"))
    assert "tabular.mlp" in registry.names("backbones")
    owned = {key for key, owner in registry.owners.items() if owner == "tabular"}
    assert ("tasks", "tabular/wine") in owned
    assert not [p for p in registry.problems if p.plugin == "tabular"]
    domain = registry.require_domain("tabular")
    assert set(domain.presets) == {"cpu", "paper"} and "stratified" in domain.splits
    for name in domain.objectives:
        assert registry.get("objectives", name, "tabular").name == name


def test_uses_only_the_public_api():
    """Every import from tapweight is a name tapweight exports at top level."""
    for file in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "tapweight":
                assert {a.name for a in node.names} <= PUBLIC, file.name
            elif isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("tapweight."), file.name
            elif isinstance(node, ast.Import):
                assert not [a for a in node.names if a.name.startswith("tapweight.")], file.name
