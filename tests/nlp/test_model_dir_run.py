"""A run from a ``--model DIR`` folder, as a user runs it (a fresh process, its stderr caught
at the file descriptor): with ``--quiet`` every console line is tapweight's own (transformers'
load warnings and bars go to log.txt at most), and ``show`` and the log name the folder."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.nlp.test_custom import reviews
from tests.nlp.test_pretrained import pretrained  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow


def test_quiet_model_dir_run_prints_only_tapweight_lines_and_show_names_the_folder(pretrained, tmp_path):  # noqa: F811
    folder, _ = pretrained
    reviews(45).to_csv(tmp_path / "reviews.csv", index=False)
    run = ["run", "nlp", "custom", "--data", "reviews.csv", "--model", str(folder), "--preset", "cpu", "--quiet",
           "--steps", "2", "--out", "run", "--device", "cpu", *[a for s in (
               "nlp.text_column=review", "nlp.label_column=sentiment", "nlp.max_length=32", "final.epochs=1",
               "pretrain.batch_size=8", "finetune.batch_size=8", "reweight.batch_size=8") for a in ("--set", s)]]
    jobs = [{"argv": run, "cwd": str(tmp_path), "out": str(tmp_path / "out-run")},
            {"argv": ["show", "run"], "cwd": str(tmp_path), "out": str(tmp_path / "out-show")}]
    for job in jobs:
        Path(job["out"]).mkdir()
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    subprocess.run([sys.executable, str(Path(__file__).parents[1] / "run_commands.py"), str(tmp_path / "jobs.json")],
                   check=True, timeout=900)
    err = (tmp_path / "out-run" / "stderr").read_text()
    assert (tmp_path / "out-run" / "code").read_text() == "0", err
    foreign = [line for line in err.splitlines() if line.strip() and not line.startswith(("INFO tapweight",
                                                                                          "WARNING tapweight"))]
    assert foreign == []
    log = (tmp_path / "run" / "log.txt").read_text()
    assert f"encoder: --model {folder}" in log and "preset cpu set: " in log
    assert "nlp.model=tiny" not in log.split("preset cpu set: ")[1].splitlines()[0]  # --model overrode it
    shown = (tmp_path / "out-show" / "stdout").read_text()
    assert f"from --model {folder}" in shown and "preset cpu set: " in shown
