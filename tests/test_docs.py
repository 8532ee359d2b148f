"""The plugin tutorial's code is the plugin: assemble it from docs/writing-plugins.md and run it.
The other pages' examples print what they show, numbers aside (`shape`)."""

import importlib.util
import inspect
import json
import re
import shlex
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tapweight.plugin import hookspecs
from tapweight.plugin import manager as plugins
from tests.test_cli import cli

TUTORIAL = Path(__file__).parents[1] / "docs" / "writing-plugins.md"
PYTHON_API = Path(__file__).parents[1] / "docs" / "python-api.md"
REPRODUCIBILITY = Path(__file__).parents[1] / "docs" / "reproducibility.md"


def code_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def console_examples(text: str) -> list[tuple[str, list[str]]]:
    """``(command, the lines shown under it)`` of every ``$ `` line of the console blocks."""
    examples = []
    for block in re.findall(r"```console\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                examples.append((line[2:], []))
            else:
                examples[-1][1].append(line)
    return examples


def shape(line: str) -> str:
    """A printed line with its numbers as ``#``: they depend on the machine's arithmetic
    (docs/reproducibility.md); the words, columns and their order do not."""
    return re.sub(r"\d+(\.\d+)?", "#", line).rstrip()


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
    # section 9: new flowers scored by the saved model, a row with a missing measurement named
    (tmp_path / "flowers.csv").write_text("5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n5.9,,4.2,1.5\n")
    assert cli("predict", str(tmp_path / "run"), "--data", str(tmp_path / "flowers.csv"),
               "--out", str(tmp_path / "preds.csv")) == 0
    preds = pd.read_csv(tmp_path / "preds.csv", keep_default_na=False)
    assert preds["error"].tolist() == ["", "", "a measurement is missing"]
    assert preds["pred_species"].tolist()[2] == "" and {*preds["pred_species"][:2]} <= {"0", "1", "2"}
    probs = preds[["prob_0", "prob_1", "prob_2"]][:2].astype(float).sum(axis=1)
    assert probs.round(5).eq(1).all()


def test_tutorial_plugin_pretrains_on_a_corpus_then_runs_from_its_encoder(iris, tmp_path):
    flowers = iris.load_iris().data  # the measurements without their species
    np.savetxt(tmp_path / "flowers.csv", flowers, delimiter=",", header="a,b,c,d", comments="")
    base = tmp_path / "base"
    assert cli("pretrain", "iris", "--corpus", str(tmp_path / "flowers.csv"), "--steps", "5",
               "--quiet", "--out", str(base)) == 0
    assert cli("run", "iris", "species", "--init", str(base / "backbone.safetensors"), "--quiet",
               "--out", str(tmp_path / "run")) == 0
    assert "loaded from --init" in (tmp_path / "run" / "log.txt").read_text()


def test_tutorial_weighting_votes_as_the_page_says(iris, tmp_path):
    """Section 11's weighting, run by name: λ at every step is (prior + votes so far),
    normalised, the votes counted here from the hypergradients the run recorded."""
    out = tmp_path / "run"
    assert cli("run", "iris", "species", "--method", "iris-vote", "--quiet", "--out", str(out),
               "--set", "weighting.iris-vote.prior=2", "--set", "final.epochs=1") == 0
    weights = pd.read_csv(out / "seed0" / "weights.csv")
    names = [c for c in weights.columns if c != "step"]
    g = pd.read_csv(out / "seed0" / "losses.csv")[[f"hypergrad_{n}" for n in names]].to_numpy()
    wins = np.cumsum(g < g.mean(axis=1, keepdims=True), axis=0)
    votes = 2.0 + np.vstack([np.zeros(len(names)), wins[:-1]])  # step t trains with the votes of steps < t
    assert np.allclose(weights[names].to_numpy(), votes / votes.sum(axis=1, keepdims=True), atol=1e-6)
    assert wins[-1].max() > wins[-1].min()  # the votes differ: λ moved


def test_the_developer_guides_estimator_and_method_run(toy, tmp_path):
    """docs/developing.md's two examples, each one class and one registration, as a plugin: the
    toy task runs with both, and the run says which estimator it used."""
    page = (Path(__file__).parents[1] / "docs" / "developing.md").read_text()
    module = types.ModuleType("developer_guide")
    for block in code_blocks(page):
        exec(compile(block, "developing.md", "exec"), module.__dict__)
    assert plugins.register_plugin(module, "developer-guide")
    try:
        out = tmp_path / "run"
        assert cli("run", "toy", "blobs", "--method", "loss-scaled", "--set", "reweight.hypergrad=fd-backward",
                   "--quiet", "--out", str(out)) == 0
        summary = json.loads((out / "metrics.json").read_text())
        assert summary["method"] == "loss-scaled" and summary["estimator"]["name"] == "fd-backward"
        weights = pd.read_csv(out / "seed0" / "weights.csv").drop(columns="step")
        assert weights.nunique().gt(1).any()  # λ moved
    finally:
        plugins.pm.unregister(name="developer-guide")


def test_tutorial_explains_every_hook():
    text = TUTORIAL.read_text()
    for name in (n for n in dir(hookspecs) if n.startswith("register_")):
        params = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
        assert f"`{name}({params})`" in text, name
        assert re.search(rf"^## .*`{name}`", text, flags=re.M), f"no section on {name}"


def test_python_api_page_runs_and_prints_what_it_shows(tmp_path, monkeypatch, capsys):
    """Every cell of docs/python-api.md, in order; the printed lines are the ``# `` lines
    shown under them, numbers aside (they depend on the machine's arithmetic)."""
    pytest.importorskip("tapweight_tabular")  # the page's example domain
    monkeypatch.chdir(tmp_path)
    blocks = code_blocks(PYTHON_API.read_text())
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(PYTHON_API), "exec"), namespace)
    shown = [line[2:] for block in blocks for line in block.splitlines() if line.startswith("# ")]
    printed = capsys.readouterr().out.splitlines()
    assert [shape(line) for line in printed] == [shape(line) for line in shown]


@pytest.mark.slow
def test_the_reproducibility_page_shows_what_its_command_prints(tmp_path, monkeypatch, capsys):
    """Its example command, run as shown: the summary it prints has the page's shape."""
    pytest.importorskip("tapweight_tabular")
    monkeypatch.chdir(tmp_path)
    [(command, shown)] = console_examples(REPRODUCIBILITY.read_text())
    program, *args = shlex.split(command)
    assert program == "tapweight"
    capsys.readouterr()
    assert cli(*args) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [shape(line) for line in printed] == [shape(line) for line in shown]
