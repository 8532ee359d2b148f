"""The plugin tutorial's code is the plugin: assemble it from docs/writing-plugins.md and run it."""

import importlib.util
import inspect
import json
import re
import sys
from pathlib import Path

import pytest

from tapweight import hookspecs, plugins
from tests.test_cli import cli

TUTORIAL = Path(__file__).parents[1] / "docs" / "writing-plugins.md"


def code_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.fixture
def iris(tmp_path):
    plugin_code = [b for b in code_blocks(TUTORIAL.read_text()) if not b.startswith("# tests/")]
    path = tmp_path / "tapweight_iris_plugin.py"
    path.write_text("\n\n".join(plugin_code))
    spec = importlib.util.spec_from_file_location("tapweight_iris_plugin", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    assert plugins.register_plugin(module, "iris")
    yield module
    plugins.pm.unregister(name="iris")
    del sys.modules[spec.name]


def test_tutorial_plugin_runs_end_to_end(iris, tmp_path, capsys):
    assert cli("run", "iris", "species", "--quiet", "--out", str(tmp_path / "run"), "--set", "report_to=[jsonl]") == 0
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["metric"] == "accuracy" and 0 <= summary["test_mean"] <= 1
    reports = [json.loads(line) for line in (tmp_path / "run" / "seed0" / "report.jsonl").read_text().splitlines()]
    assert [r["step"] for r in reports] == list(range(1, 31)) + list(range(31, 36)) + [35]  # 30 steps, 5 epochs
    assert reports[-1]["result/test"] == summary["seeds"]["0"]["test"]
    assert cli("iris-info") == 0
    assert "[50, 50, 50]" in capsys.readouterr().out
    assert cli("run", "iris", "species", "--out", str(tmp_path / "bad"), "--set", "iris.hidden=0") == 2
    assert capsys.readouterr().err.strip() == "error: iris.hidden must be >= 1, got 0"


def test_tutorial_explains_every_hook():
    text = TUTORIAL.read_text()
    for name in (n for n in dir(hookspecs) if n.startswith("register_")):
        params = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
        assert f"`{name}({params})`" in text, name
        assert re.search(rf"^## .*`{name}`", text, flags=re.M), f"no section on {name}"
