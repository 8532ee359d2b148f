"""The "Your own data" section of getting-started.md, run as written: its commands on files
of the names it uses (with a small config added), its torch script and its pipeline() snippet,
whose outputs must be what ``tapweight predict`` gives."""

import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tapweight.commands.predict import predict
from tapweight.plugin import manager as plugins
from tests.mol.test_custom import assay
from tests.nlp.conftest import TINY as NLP_TINY
from tests.nlp.test_custom import reviews
from tests.test_cli import cli

PAGE = Path(__file__).parents[1] / "docs" / "getting-started.md"
SMALL = {
    "mol": ["--steps", "2", "--set", "final.epochs=1", "--set", "pretrain.batch_size=8", "--set",
            "finetune.batch_size=8", "--set", "reweight.batch_size=8", "--set", "objectives=[mol.jpp,mol.mcl]",
            "--set", "mol.render_workers=1", "--quiet"],
    "nlp": ["--steps", "2", "--set", "final.epochs=1", "--set", "pretrain.batch_size=8", "--set",
            "finetune.batch_size=8", "--set", "reweight.batch_size=8", "--quiet",
            *[a for s in NLP_TINY for a in ("--set", s)]],
    "tabular": ["--steps", "2", "--set", "final.epochs=1", "--quiet"],
}


def section() -> str:
    text = PAGE.read_text()
    return text[text.index("## Your own data"):]


def commands(block: str) -> list[list[str]]:
    """The ``tapweight`` command lines of a bash block, continuation lines joined, comments cut."""
    joined = block.replace("\\\n", " ")
    return [shlex.split(line, comments=True)[1:] for line in joined.splitlines() if line.startswith("tapweight ")]


def files(folder: Path) -> None:
    """The files the section's commands name."""
    frame = assay(80).drop(columns="note").rename(columns={"compound": "smiles"})
    frame.to_csv(folder / "assay.csv", index=False)
    frame[["smiles"]].head(5).to_csv(folder / "new_molecules.csv", index=False)
    reviews(60).to_csv(folder / "reviews.csv", index=False)
    reviews(5)[["review"]].to_csv(folder / "new_reviews.csv", index=False)
    from sklearn.datasets import load_wine

    wine = load_wine(as_frame=True).frame.rename(columns={"target": "cultivar"})
    wine.to_csv(folder / "wines.csv", index=False)


@pytest.mark.slow
def test_the_own_data_section_runs_as_written(tmp_path, monkeypatch, cache_dir):
    pytest.importorskip("rdkit")  # both built-in domains: the core session has neither
    pytest.importorskip("transformers")
    files(tmp_path)
    monkeypatch.chdir(tmp_path)
    domains = plugins.build_registry().names("domains")
    blocks = re.findall(r"```bash\n(.*?)```", section(), flags=re.S)
    ran = []
    for argv in (a for block in blocks for a in commands(block)):
        domain = argv[1] if argv[0] == "run" else None
        if domain and domain not in domains:
            continue  # the tabular plugin is not installed here
        extra = SMALL[domain] if domain else []
        assert cli(*argv, *extra) == 0, argv
        ran.append(argv[:2])
    assert ["run", "mol"] in ran and ["run", "nlp"] in ran and ["predict", "runs/assay"] in ran
    assert (tmp_path / "new_molecules_preds.csv").is_file() and (tmp_path / "new_reviews_preds.csv").is_file()

    script, snippet = re.findall(r"```python\n(.*?)```", section(), flags=re.S)
    scope: dict = {}
    exec(script, scope)  # the plain torch script on the fine-tuned torchvision export
    pd.DataFrame({"smiles": scope["smiles"]}).to_csv(tmp_path / "three.csv", index=False)
    ours = predict("runs/assay", tmp_path / "three.csv", device="cpu")
    np.testing.assert_allclose(scope["values"].numpy(), ours[["pred_pIC50", "pred_logD"]].to_numpy(),
                               rtol=1e-4, atol=1e-4)

    scope = {}
    exec(snippet, scope)  # pipeline() on the Hugging Face export
    texts = ["a gorgeous, witty, seductive movie", "nothing about it is memorable"]
    pd.DataFrame({"review": texts}).to_csv(tmp_path / "two.csv", index=False)
    ours = predict("runs/reviews", tmp_path / "two.csv", device="cpu")
    theirs = scope["classify"](texts, top_k=None)
    for row, scores in zip(ours.itertuples(), theirs):
        probs = {s["label"]: s["score"] for s in scores}
        np.testing.assert_allclose([probs[c] for c in ("neg", "neutral", "pos")],
                                   [row.prob_neg, row.prob_neutral, row.prob_pos], rtol=1e-4, atol=1e-5)
