"""Every bad input is one line: exit code 2, one error line on stderr that names the problem
and its fix (a WARNING line about the data may precede it; no other line, whatever a library
logs), no traceback, and nothing changed on disk (no run folder left, no file modified).

One table, across the toy domain and the real ones (tabular, mol, nlp); a row of a domain
that is not installed is skipped (the ``core`` nox session installs none of them). Each
row: the command line, the files to create first, and a fragment of the expected message.
The rows run one after another in one fresh process (``run_commands.py``), their stderr
read at the file descriptor: a library's own handler or RDKit's C++ log would show there.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from tapweight.plugin import manager as plugins
from tests.test_cli import cli

#: a run folder of the toy domain, made once (see ``toy_run``), copied into each test that needs it
RUN = "done"
TOY = ["run", "toy", "blobs", "--quiet", "--out", "run"]
TAB = ["run", "tabular", "breast-cancer", "--quiet", "--out", "run"]
MOL_RUN = ["run", "mol", "bbbp", "--quiet", "--out", "run", "--set", "split=random",
           "--set", "mol.render_workers=1", "--set", "mol.image_size=32"]
MOL = [*MOL_RUN, "--data", "bbbp.csv"]
NLP_RUN = ["run", "nlp", "sst2", "--quiet", "--out", "run", "--model", "tiny"]
NLP = [*NLP_RUN, "--data", "sst2.tsv"]
MOLECULES = ["CC(=O)Oc1ccccc1C(=O)O", "Cn1cnc2c1c(=O)n(C)c(=O)n2C", "CC(C)Cc1ccc(cc1)C(C)C(=O)O",
             "CC(=O)Nc1ccc(O)cc1", "c1ccc2ccccc2c1", "OC1CCCCC1", "CCN(CC)CC", "c1ccncc1",
             "O=C(O)c1ccccc1O", "CC1=CC(=O)C=CC1=O", "Clc1ccc(Cl)cc1", "NCCc1ccc(O)c(O)c1"]
SENTENCES = ["a charming journey", "bleak and desperate", "all astounding", "very slow", "tedious",
             "the best film", "incompetent", "gorgeous and witty", "well worth seeing", "a disaster"]


class Payload:
    """Unpickling this creates the file ``path``: what a crafted checkpoint could do."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def bbbp(labels) -> str:
    """A BBBP-like CSV: the molecules above (repeated as needed) with these labels."""
    return "num,name,p_np,smiles\n" + "".join(
        f"{i},m{i},{y},{MOLECULES[i % len(MOLECULES)]}\n" for i, y in enumerate(labels))


#: a BBBP-like file whose random split has both classes in train, val and test
TRAINABLE = bbbp([0, 1] * 30)


def sst2(labels) -> str:
    return "sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in zip(SENTENCES, labels))


def torch_bytes(obj) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def unfinished(folder: Path) -> None:
    """Make a finished run folder look cut off before its end, so resume loads the checkpoint."""
    for name in ("metrics.json", "seed0/metrics.json", "weights.png"):
        (folder / name).unlink()


def replace_in(path: str, old: str, new: str) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        target = root / path
        target.write_text(target.read_text().replace(old, new))
    return edit


@dataclass
class Bad:
    id: str
    argv: list[str]
    expect: str  # a fragment of the one-line message
    files: dict[str, str | bytes | None] = field(default_factory=dict)  # None: a folder
    domain: str = "toy"
    run_folder: bool = False  # copy the toy run folder to ./done first
    edit: Callable[[Path], None] | None = None  # then change it


CHECKPOINT = f"{RUN}/seed0/checkpoint.pt"
RESUME = ["resume", RUN, "--quiet"]

ROWS = [
    # -- options and config values (toy: the core's checks) -------------------------------
    Bad("seed-negative", [*TOY, "--set", "seed=-1"], "seeds must be in 0..2^32-1"),
    Bad("seeds-negative", [*TOY, "--seeds", "0,-3"], "seeds must be in 0..2^32-1"),
    Bad("seeds-not-numbers", [*TOY, "--seeds", "a,b"], "--seeds takes integers"),
    Bad("log-every-zero", [*TOY, "--set", "log_every=0"], "log_every must be >= 1"),
    Bad("checkpoint-every-negative", [*TOY, "--set", "checkpoint_every=-1"], "checkpoint_every must be >= 0"),
    Bad("checkpoint-minutes-negative", [*TOY, "--set", "checkpoint_minutes=-1"], "checkpoint_minutes must be >= 0"),
    Bad("final-epochs-negative", [*TOY, "--set", "final.epochs=-1"], "final.epochs must be >= 1"),
    Bad("final-epochs-zero", [*TOY, "--set", "final.epochs=0"], "final.epochs must be >= 1"),
    Bad("final-patience-negative", [*TOY, "--set", "final.patience=-2"], "final.patience must be >= 0"),
    Bad("num-workers-negative", [*TOY, "--set", "num_workers=-1"], "num_workers must be >= 0"),
    Bad("steps-zero", [*TOY, "--steps", "0"], "steps must be >= 1"),
    Bad("steps-not-a-number", [*TOY, "--set", "steps=many"], "could not be converted to Integer"),
    Bad("alpha-lr-absurd", [*TOY, "--set", "reweight.lr=1e9"], "reweight.lr 1e+09 is above 1e+06"),
    Bad("lr-nan", [*TOY, "--set", "pretrain.lr=.nan"], "pretrain.lr must be a finite number"),
    Bad("gamma-infinite", [*TOY, "--set", "finetune.gamma=.inf"], "finetune.gamma must be a finite number"),
    Bad("gamma-negative", [*TOY, "--set", "finetune.gamma=-1"], "finetune.gamma must be >= 0"),
    Bad("momentum-above-one", [*TOY, "--set", "pretrain.momentum=1.5"], "pretrain.momentum must be in [0, 1)"),
    Bad("betas-one-value", [*TOY, "--set", "finetune.betas=[0.9]"], "finetune.betas must be two numbers"),
    Bad("weight-decay-negative", [*TOY, "--set", "final.weight_decay=-0.1"], "final.weight_decay must be >= 0"),
    Bad("step-size-zero", [*TOY, "--set", "pretrain.step_size=0"], "pretrain.step_size must be >= 1"),
    Bad("every-zero", [*TOY, "--set", "reweight.every=0"], "reweight.every must be >= 1"),
    Bad("every-with-unroll", [*TOY, "--set", "reweight.every=2", "--set", "reweight.unroll=2"],
        "reweight.every=2 and reweight.unroll=2: set one of them to 1"),
    Bad("decay-above-one", [*TOY, "--set", "reweight.decay=1.5"], "reweight.decay must be in (0, 1]"),
    Bad("warmup-negative", [*TOY, "--set", "pretrain.warmup_steps=-1"], "pretrain.warmup_steps must be >= 0"),
    Bad("fd-radius-zero", [*TOY, "--set", "reweight.fd_radius=0"], "reweight.fd_radius must be > 0"),
    Bad("cg-iterations-zero", [*TOY, "--set", "reweight.iterations=0"], "reweight.iterations must be >= 1"),
    Bad("batch-size-zero", [*TOY, "--set", "pretrain.batch_size=0"], "pretrain.batch_size must be >= 1"),
    Bad("weights-negative", [*TOY, "--method", "fixed", "--set", "weights=[-1,2]"], "weights must be >= 0"),
    Bad("weights-count", [*TOY, "--method", "fixed", "--set", "weights=[1]"], "one weight per objective"),
    Bad("unknown-key", [*TOY, "--set", "pretrain.lrr=1"], "Key 'lrr' not in 'PretrainConfig'"),
    Bad("unknown-preset", [*TOY, "--preset", "huge"], "has no preset 'huge'"),
    Bad("unknown-method", [*TOY, "--method", "magic"], "unknown method 'magic'"),
    Bad("unknown-split", [*TOY, "--set", "split=nosuch"], "unknown split 'nosuch'"),
    Bad("device-missing-gpu", [*TOY, "--device", "cuda:99"], "CUDA GPU"),
    Bad("device-unknown", [*TOY, "--device", "tpu"], "bad device 'tpu'"),
    Bad("device-meta", [*TOY, "--device", "meta"], "tapweight runs on auto, cpu, cuda"),
    Bad("config-missing", [*TOY, "--config", "missing.yaml"], "config file 'missing.yaml' does not exist"),
    Bad("config-invalid-yaml", [*TOY, "--config", "c.yaml"], "is not valid YAML", {"c.yaml": "a: [1,\n"}),
    Bad("config-a-list", [*TOY, "--config", "c.yaml"], "must hold a mapping", {"c.yaml": "- 1\n- 2\n"}),
    Bad("config-binary", [*TOY, "--config", "c.yaml"], "is not valid YAML", {"c.yaml": b"\xff\xfe\x00\x81"}),
    Bad("usage-unknown-option", [*TOY, "--nope"], "No such option: --nope"),
    # -- --out --------------------------------------------------------------------------
    Bad("out-is-a-file", ["run", "toy", "blobs", "--out", "file.txt"], "is a file, not a folder",
        {"file.txt": "notes"}),
    Bad("out-under-a-file", ["run", "toy", "blobs", "--out", "file.txt/run"], "'file.txt' is a file",
        {"file.txt": "notes"}),
    Bad("out-not-empty", ["run", "toy", "blobs", "--out", "full"], "already exists",
        {"full/notes.txt": "mine"}),
    Bad("out-unwritable", ["run", "toy", "blobs", "--out", "/proc/tapweight-run"], "cannot make run folder"),
    # -- --init ---------------------------------------------------------------------------
    Bad("init-missing", [*TOY, "--init", "none.pt"], "--init 'none.pt' does not exist"),
    Bad("init-text", [*TOY, "--init", "w.pt"], "is not a readable torch file", {"w.pt": "weights!\n"}),
    Bad("init-empty", [*TOY, "--init", "w.pt"], "is empty (0 bytes)", {"w.pt": b""}),
    Bad("init-folder", [*TOY, "--init", "w"], "is a folder, not a file", {"w": None}),
    Bad("init-bad-safetensors", [*TOY, "--init", "w.safetensors"], "not a readable safetensors file",
        {"w.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!"}),
    Bad("init-pickled-code", [*TOY, "--init", "w.pt"], "holds Python objects besides tensors",
        {"w.pt": torch_bytes({"net": Payload("pwned.txt")})}),
    Bad("init-not-a-dict", [*TOY, "--init", "w.pt"], "holds a Tensor, not a state dict",
        {"w.pt": torch_bytes(torch.ones(3))}),
    # -- resume: damaged run folders --------------------------------------------------------
    Bad("resume-truncated-checkpoint", RESUME, "is not a readable torch file", run_folder=True,
        edit=lambda root: (root / CHECKPOINT).write_bytes((root / CHECKPOINT).read_bytes()[:3000])),
    Bad("resume-empty-checkpoint", RESUME, "is empty (0 bytes): delete", run_folder=True,
        edit=lambda root: (root / CHECKPOINT).write_bytes(b"")),
    Bad("resume-text-checkpoint", RESUME, "is not a readable torch file", run_folder=True,
        edit=lambda root: (root / CHECKPOINT).write_text("step: 3\n")),
    Bad("resume-pickled-code", RESUME, "holds Python objects besides tensors", run_folder=True,
        edit=lambda root: (root / CHECKPOINT).write_bytes(torch_bytes({"step": Payload("pwned.txt")}))),
    Bad("resume-foreign-checkpoint", RESUME, "is not a tapweight checkpoint (no theta)", run_folder=True,
        edit=lambda root: (root / CHECKPOINT).write_bytes(torch_bytes({"step": 3}))),
    Bad("resume-checkpoint-of-other-model", RESUME, "does not fit this run", run_folder=True,
        edit=replace_in(f"{RUN}/config.yaml", "hidden: 16", "hidden: 8")),
    Bad("resume-empty-config", RESUME, "does not name a domain and task", run_folder=True,
        edit=lambda root: (root / RUN / "config.yaml").write_text("")),
    Bad("resume-invalid-config", RESUME, "is not valid YAML", run_folder=True,
        edit=lambda root: (root / RUN / "config.yaml").write_text("domain: [toy\n")),
    Bad("resume-config-bad-value", RESUME, "steps must be >= 1", run_folder=True,
        edit=replace_in(f"{RUN}/config.yaml", "steps: 6", "steps: -6")),
    Bad("resume-config-unknown-domain", RESUME, "unknown domain 'ghost'", run_folder=True,
        edit=replace_in(f"{RUN}/config.yaml", "domain: toy", "domain: ghost")),
    Bad("resume-not-a-run-folder", ["resume", "elsewhere"], "is not a run folder", {"elsewhere/x": "1"}),
    Bad("resume-other-task", ["run", "toy", "blobs-ce", "--resume", RUN], "is a run of toy/blobs, not toy/blobs-ce",
        run_folder=True),
    Bad("resume-with-options", ["run", "toy", "blobs", "--resume", RUN, "--steps", "9"], "drop the other options",
        run_folder=True),
    # -- show: damaged run folders ----------------------------------------------------------
    Bad("show-binary-weights", ["show", RUN], "weights.csv is damaged", run_folder=True,
        edit=lambda root: (root / RUN / "seed0/weights.csv").write_bytes(b"\xff\x00\xfe\x81" * 50)),
    Bad("show-empty-weights", ["show", RUN], "weights.csv is damaged", run_folder=True,
        edit=lambda root: (root / RUN / "seed0/weights.csv").write_text("")),
    Bad("show-weights-without-steps", ["show", RUN], "weights.csv is damaged", run_folder=True,
        edit=lambda root: (root / RUN / "seed0/weights.csv").write_text("a,b\n0.5,0.5\n")),
    Bad("show-invalid-metrics", ["show", RUN], "metrics.json is not valid JSON", run_folder=True,
        edit=lambda root: (root / RUN / "metrics.json").write_text('{"test_mean": NaN, ')),
    Bad("show-metrics-a-list", ["show", RUN], "is not a tapweight summary", run_folder=True,
        edit=lambda root: (root / RUN / "metrics.json").write_text("[1, 2]")),
    Bad("show-a-file", ["show", "notes.txt"], "is not a run folder", {"notes.txt": "x"}),
    # -- tabular ----------------------------------------------------------------------------
    Bad("tabular-zero-width-layer", [*TAB, "--set", "tabular.hidden=0"], "tabular.hidden must be >= 1",
        domain="tabular"),
    Bad("tabular-dropout", [*TAB, "--set", "tabular.dropout=1.5"], "tabular.dropout must be in [0, 1)",
        domain="tabular"),
    Bad("tabular-mask-rate", [*TAB, "--set", "tabular.mfr_mask_rate=1.5"], "tabular.mfr_mask_rate must be in (0, 1]",
        domain="tabular"),
    Bad("tabular-temperature", [*TAB, "--set", "tabular.scarf_temperature=0"], "must be > 0", domain="tabular"),
    Bad("tabular-data-given", [*TAB, "--data", "x.csv"], "drop --data", domain="tabular"),
    Bad("tabular-corpus-missing", [*TAB, "--corpus", "c.csv"], "corpus file 'c.csv' does not exist",
        domain="tabular"),
    Bad("tabular-corpus-empty", [*TAB, "--corpus", "c.csv"], "is neither a CSV", {"c.csv": ""}, domain="tabular"),
    Bad("tabular-corpus-binary", [*TAB, "--corpus", "c.csv"], "is neither a CSV",
        {"c.csv": bytes(range(256)) * 4}, domain="tabular"),
    Bad("tabular-corpus-bad-npy", [*TAB, "--corpus", "c.npy"], "is neither a CSV", {"c.npy": b"\x93NUMPY junk"},
        domain="tabular"),
    Bad("tabular-corpus-wrong-width", [*TAB, "--corpus", "c.csv"], "it needs 30 numeric feature columns",
        {"c.csv": "a,b\n1,2\n"}, domain="tabular"),
    Bad("tabular-init-wrong-shape", [*TAB, "--init", "w.pt"], "does not fit backbone",
        {"w.pt": torch_bytes({"x": torch.ones(1)})}, domain="tabular"),
    Bad("tabular-corpus-folder", [*TAB, "--corpus", "c"], "corpus 'c' is a folder: give one file", {"c": None},
        domain="tabular"),
    Bad("tabular-pretrain-corpus-folder", ["pretrain", "tabular", "--corpus", "c", "--quiet", "--out", "run"],
        "corpus 'c' is a folder: give one file", {"c": None}, domain="tabular"),
    # -- mol --------------------------------------------------------------------------------
    Bad("mol-data-missing", [*MOL], "data path 'bbbp.csv' does not exist", domain="mol"),
    Bad("mol-data-empty", [*MOL], "cannot read", {"bbbp.csv": ""}, domain="mol"),
    Bad("mol-data-not-utf8", [*MOL], "cannot read bbbp.csv as CSV", {"bbbp.csv": "num,name,p_np,smiles\n"
        "1,caf\xe9,1,CCO\n".encode("latin-1")}, domain="mol"),
    Bad("mol-data-folder-without-the-file", [*MOL_RUN, "--data", "d"],
        "no bbbp file in folder 'd' (looked for bbbp.csv, bbbp.csv.gz, BBBP.csv there and in moleculenet/)",
        {"d/train.csv": TRAINABLE}, domain="mol"),
    Bad("mol-no-label-column", [*MOL], "has no column 'p_np'", {"bbbp.csv": "num,name,label,smiles\n1,a,1,CCO\n"},
        domain="mol"),
    Bad("mol-all-smiles-invalid", [*MOL], "no SMILES in column 'smiles'",
        {"bbbp.csv": "num,name,p_np,smiles\n1,a,1,xyz\n2,b,0,qqq\n"}, domain="mol"),
    Bad("mol-label-words", [*MOL], "label column 'p_np' holds 'yes'",
        {"bbbp.csv": "num,name,p_np,smiles\n1,a,yes,CCO\n2,b,no,CCN\n"}, domain="mol"),
    Bad("mol-single-class", [*MOL], "every label column holds a single class", {"bbbp.csv": bbbp([1] * 12)},
        domain="mol"),
    Bad("mol-no-labels", [*MOL], "has no labels", {"bbbp.csv": bbbp([""] * 12)}, domain="mol"),
    Bad("mol-label-two", [*MOL], "must be 0 or 1", {"bbbp.csv": bbbp([0, 1, 2] * 4)}, domain="mol"),
    Bad("mol-jigsaw-probability", [*MOL, "--set", "mol.jigsaw_unshuffled=1.5"],
        "mol.jigsaw_unshuffled must be in [0, 1]", domain="mol"),
    Bad("mol-mask-ratio", [*MOL, "--set", "mol.mcl_mask_ratio=-0.1"], "mol.mcl_mask_ratio must be in [0, 1)",
        domain="mol"),
    Bad("mol-image-size", [*MOL, "--set", "mol.image_size=0"], "mol.image_size must be >= 16", domain="mol"),
    Bad("mol-corpus-binary", [*MOL, "--corpus", "c.smi"], "is not a SMILES file",
        {"bbbp.csv": TRAINABLE, "c.smi": bytes(range(128, 256)) * 4}, domain="mol"),
    Bad("mol-corpus-empty-csv", [*MOL, "--corpus", "c.csv"], "is not a SMILES file",
        {"bbbp.csv": TRAINABLE, "c.csv": ""}, domain="mol"),
    Bad("mol-corpus-no-valid-smiles", [*MOL, "--corpus", "c.smi"], "no SMILES is valid",
        {"bbbp.csv": TRAINABLE, "c.smi": "xyz\nqqq\n"}, domain="mol"),
    Bad("mol-corpus-folder", [*MOL, "--corpus", "c"], "corpus 'c' is a folder: give one file",
        {"bbbp.csv": TRAINABLE, "c": None}, domain="mol"),
    Bad("mol-pretrain-corpus-folder", ["pretrain", "mol", "--corpus", "c", "--quiet", "--out", "run"],
        "corpus 'c' is a folder: give one file", {"c": None}, domain="mol"),
    # -- nlp --------------------------------------------------------------------------------
    Bad("nlp-data-missing", [*NLP], "--data 'sst2.tsv' does not exist", domain="nlp"),
    Bad("nlp-data-empty", [*NLP[:-1], "empty.csv"], "could not read", {"empty.csv": ""}, domain="nlp"),
    Bad("nlp-data-not-utf8", [*NLP], "could not read 'sst2.tsv' as tsv: 'utf-8' codec can't decode",
        {"sst2.tsv": "sentence\tlabel\ncaf\xe9 au lait\t1\n".encode("latin-1")}, domain="nlp"),
    Bad("nlp-folder-without-train", [*NLP_RUN, "--data", "d"], "folder 'd' has no train file (looked for "
        "train.tsv, train.csv, train.json, train.jsonl, train.parquet; found: dev.tsv, test.tsv)",
        {"d/dev.tsv": sst2([0, 1] * 5), "d/test.tsv": sst2([1, 0] * 5)}, domain="nlp"),
    Bad("nlp-folder-with-two-train-files", [*NLP_RUN, "--data", "d"], "has two train files (train.csv, train.tsv)",
        {"d/train.tsv": sst2([0, 1] * 5), "d/train.csv": "sentence,label\nfine,1\n"}, domain="nlp"),
    Bad("nlp-folder-with-unlabelled-train", [*NLP_RUN, "--data", "d"], "has no labelled train rows (train.tsv: 0 "
        "labelled train rows, dev.tsv: 10 labelled dev rows)",
        {"d/train.tsv": sst2([""] * 10), "d/dev.tsv": sst2([0, 1] * 5)}, domain="nlp"),
    Bad("nlp-unknown-label", [*NLP], "unknown label 'maybe'", {"sst2.tsv": sst2(["maybe"] * 10)}, domain="nlp"),
    Bad("nlp-regression-words", ["run", "nlp", "stsb", "--quiet", "--out", "run", "--model", "tiny", "--data",
                                 "stsb.tsv"], "must be numbers, found 'high'",
        {"stsb.tsv": "sentence1\tsentence2\tlabel\nhi\tthere\thigh\n"}, domain="nlp"),
    Bad("nlp-single-class", [*NLP], "every label column holds a single class", {"sst2.tsv": sst2([1] * 10)},
        domain="nlp"),
    Bad("nlp-no-labels", [*NLP], "has no labelled train rows", {"sst2.tsv": sst2([""] * 10)}, domain="nlp"),
    Bad("nlp-corpus-binary", [*NLP, "--corpus", "c.txt"], "is not UTF-8 text",
        {"sst2.tsv": sst2([0, 1] * 5), "c.txt": bytes(range(128, 256)) * 4}, domain="nlp"),
    Bad("nlp-corpus-empty", [*NLP, "--corpus", "c.txt"], "has no text",
        {"sst2.tsv": sst2([0, 1] * 5), "c.txt": "\n\n"}, domain="nlp"),
    Bad("nlp-corpus-folder", [*NLP, "--corpus", "c"], "--corpus 'c' is not a file",
        {"sst2.tsv": sst2([0, 1] * 5), "c": None}, domain="nlp"),
    Bad("nlp-pretrain-corpus-folder", ["pretrain", "nlp", "--model", "tiny", "--corpus", "c", "--quiet", "--out",
                                       "run"], "--corpus 'c' is not a file", {"c": None}, domain="nlp"),
    Bad("nlp-max-length", [*NLP, "--set", "nlp.max_length=0"], "nlp.max_length must be >= 8", domain="nlp"),
    Bad("nlp-heads", [*NLP, "--set", "nlp.tiny_heads=3"], "must be a multiple of nlp.tiny_heads", domain="nlp"),
    Bad("nlp-init-text", [*NLP, "--init", "w.pt"], "is not a readable torch file", {"w.pt": "no"}, domain="nlp"),
]
# the module each domain cannot run without (the core session has neither RDKit nor transformers)
MODULES = {"toy": None, "tabular": "tapweight_tabular", "mol": "rdkit", "nlp": "transformers"}


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` and a digest of each file's bytes and mode."""
    state = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_dir():
            state[key] = "dir"
        else:
            state[key] = hashlib.sha256(path.read_bytes()).hexdigest() + oct(path.stat().st_mode)
    return state


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory) -> Path:
    """A finished toy run (6 steps), made once."""
    from tests import toy_plugin

    folder = tmp_path_factory.mktemp("toy-run") / RUN
    assert plugins.register_plugin(toy_plugin, "toy")
    try:
        assert cli("run", "toy", "blobs", "--quiet", "--keep-checkpoint", "--out", str(folder)) == 0
    finally:
        plugins.pm.unregister(name="toy")
    return folder


def installed(row: Bad) -> bool:
    return not MODULES[row.domain] or importlib.util.find_spec(MODULES[row.domain]) is not None


def prepare(row: Bad, folder: Path, toy_run: Path) -> None:
    """The working folder of ``row``: the toy run folder (when it needs one) and its files."""
    folder.mkdir(parents=True)
    if row.run_folder:
        shutil.copytree(toy_run, folder / RUN)
        unfinished(folder / RUN)
    for name, content in row.files.items():
        path = folder / name
        if content is None:
            path.mkdir(parents=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    if row.edit is not None:
        row.edit(folder)


@pytest.fixture(scope="module")
def table(toy_run, cache_dir, tmp_path_factory) -> Path:
    """Every installed row, run once: ``<folder>/<row id>/`` holds its working folder ``cwd``,
    the snapshot taken before, its exit code and its stdout and stderr."""
    root = tmp_path_factory.mktemp("bad-inputs")
    jobs = []
    for row in filter(installed, ROWS):
        prepare(row, root / row.id / "cwd", toy_run)
        (root / row.id / "before.json").write_text(json.dumps(snapshot(root / row.id / "cwd")))
        jobs.append({"argv": row.argv, "cwd": str(root / row.id / "cwd"), "out": str(root / row.id)})
    (root / "jobs.json").write_text(json.dumps(jobs))
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("run_commands.py")), str(root / "jobs.json")],
                          capture_output=True, text=True, timeout=1800)
    (root / "runner.txt").write_text(f"exit {done.returncode}\n{done.stdout}{done.stderr}")
    return root


def test_the_table_covers_sixty_inputs_across_the_domains():
    assert len(ROWS) >= 60 and len({row.id for row in ROWS}) == len(ROWS)
    assert {"tabular", "mol", "nlp"} <= {row.domain for row in ROWS}


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.id)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(row, request):
    if not installed(row):
        pytest.skip(f"domain {row.domain} is not installed")
    out = request.getfixturevalue("table") / row.id
    runner = (out.parent / "runner.txt").read_text()[-3000:]
    assert (out / "code").exists(), f"the runner ended before this row: {runner}"
    err = (out / "stderr").read_text(errors="replace")
    assert (out / "code").read_text() == "2", err
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("error: ") and row.expect in lines[-1], err
    # whatever a library logs: nothing but our WARNING lines before the one error line
    assert all(line.startswith("WARNING ") for line in lines[:-1]), err
    assert snapshot(out / "cwd") == json.loads((out / "before.json").read_text())
    assert not os.path.exists(out / "cwd" / "pwned.txt")
