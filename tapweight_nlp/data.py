"""Splits, the pretraining corpus and the batches of the NLP domain.

Splits: ``glue`` is the TapWeight paper's GLUE protocol — the GLUE dev set (rows loaded
as ``test``) is the test set, everything else is split 8:1 into train and val with the
seed; ``given`` keeps the files' own train/dev/test; ``files`` (the ``custom`` task's)
keeps what the files give and draws what they lack. Each logs what it did. The level I corpus is the task's
training text (TAPT, Gururangan et al., 2020) unless ``cfg.corpus`` names a text file;
``tapweight pretrain nlp --corpus FILE`` pretrains on such a file alone (`build_corpus`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from tapweight import DomainData, Split, TapweightError, TaskSpec, random_split
from tapweight_nlp.load import TextTable
from tapweight_nlp.tokenizer import TINY, load_tokenizer

log = logging.getLogger(__name__)


def glue_split(table: TextTable, seed: int) -> Split:
    """Test = the GLUE dev set; the rest split 8:1 into train/val. No test rows: 8:1:1."""
    parts = table.parts
    test = np.flatnonzero(parts == "test")
    if len(test) == 0:
        log.info("split glue: no test file, so train/val/test drawn 8:1:1 at random from %d rows", len(parts))
        return random_split(table, seed)
    pool = np.random.default_rng(seed).permutation(np.flatnonzero(parts != "test"))
    n_val = int(round(len(pool) / 9))
    log.info("split glue (the paper's protocol): test = the test file's %d rows; train and dev files pooled "
             "(%d rows) and drawn 8:1 into train/val (--set split=given keeps a dev file as val)",
             len(test), len(pool))
    return Split(train=pool[n_val:], val=pool[:n_val], test=test)


def given_split(table: TextTable, seed: int) -> Split:
    """The files' own train, dev and test splits."""
    parts = table.parts
    split = Split(*(np.flatnonzero(parts == p) for p in ("train", "dev", "test")))
    if min(len(split.train), len(split.val), len(split.test)) == 0:
        raise TapweightError(f"split 'given' needs labelled train, dev and test files in "
                             f"{table.source}; use --set split=files (what is missing drawn from train) "
                             f"or --set split=glue")
    log.info("split given: train on the train file (%d rows), select on the dev file (%d), test on the "
             "test file (%d)", len(split.train), len(split.val), len(split.test))
    return split


def files_split(table: TextTable, seed: int) -> Split:
    """The files' own splits where given: train, dev (the validation rows) and test; a missing
    dev file is drawn from train (1 in 9), and with neither dev nor test file the rows are
    drawn 8:1:1 at random."""
    parts = table.parts
    if not (parts == "test").any():
        log.info("split files: no test file, so train/val/test drawn 8:1:1 at random from %d rows", len(parts))
        return random_split(table, seed)
    if (parts == "dev").any():
        return given_split(table, seed)
    train = np.random.default_rng(seed).permutation(np.flatnonzero(parts == "train"))
    n_val = int(round(len(train) / 9))
    log.info("split files: test on the test file (%d rows); no dev file, so val drawn from the train file "
             "(%d of %d rows)", int((parts == "test").sum()), n_val, len(train))
    return Split(train=train[n_val:], val=train[:n_val], test=np.flatnonzero(parts == "test"))


class Examples(Dataset):
    """Labelled examples: ``(text or (text, text), label)``."""

    def __init__(self, inputs: Sequence, labels: np.ndarray):
        self.inputs, self.labels = inputs, labels

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i):
        return self.inputs[i], self.labels[i]


class TextCorpus(Dataset):
    """Level I texts; ``tokenizer`` is what the objectives mask and reorder with."""

    def __init__(self, texts: Sequence[str], tokenizer):
        self.texts, self.tokenizer = texts, tokenizer

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i) -> str:
        return self.texts[i]


class CorpusCollate:
    """Texts -> ``{input_ids, attention_mask, special_tokens_mask}``, each [B, L]."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return dict(self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                   return_special_tokens_mask=True, return_tensors="pt"))


class TaskCollate:
    """Examples -> ``(inputs, labels)``: class ids long [B] or scores float [B, 1].

    Sentence pairs are encoded together (``<s> a </s></s> b </s>`` for RoBERTa).
    """

    def __init__(self, tokenizer, max_length: int, classification: bool):
        self.tokenizer, self.max_length = tokenizer, max_length
        self.classification = classification

    def __call__(self, items: list) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        inputs, labels = zip(*items)
        pairs = isinstance(inputs[0], tuple)
        first = [x[0] for x in inputs] if pairs else list(inputs)
        second = [x[1] for x in inputs] if pairs else None
        encoded = self.tokenizer(first, second, padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
        batch = {k: encoded[k] for k in ("input_ids", "attention_mask")}
        y = torch.tensor(np.stack(labels))  # [B, 1] float
        return batch, (y[:, 0].long() if self.classification else y.float())


def corpus_texts(table: TextTable, rows: np.ndarray) -> list[str]:
    """The level I text of table rows: a pair becomes one text, the two joined by a space."""
    return [x if isinstance(x, str) else " ".join(x) for x in (table.inputs[i] for i in rows)]


def read_corpus(path: str) -> list[str]:
    """One text per non-empty line of ``path``."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise TapweightError(f"--corpus '{path}' is not a file (expected one text per line)")
    try:
        texts = [line.strip() for line in file.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError:
        raise TapweightError(f"--corpus '{path}' is not UTF-8 text (one text per line)") from None
    texts = [t for t in texts if t]
    if not texts:
        raise TapweightError(f"--corpus '{path}' has no text")
    return texts


def subsample(rows: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """At most ``limit`` of ``rows`` (all when ``limit`` is 0), drawn with ``seed``."""
    if not limit or len(rows) <= limit:
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, size=limit, replace=False))


def corpus_data(opts, texts: list[str], info: dict) -> DomainData:
    """The level I part of the data: ``texts``, tokenized by the tokenizer ``opts`` name."""
    tokenizer, info["tokenizer"] = load_tokenizer(opts, texts)
    return DomainData(corpus=TextCorpus(texts, tokenizer),
                      corpus_collate=CorpusCollate(tokenizer, opts.max_length), info=info)


def build_corpus(cfg, path: str) -> DomainData:
    """``Domain.build_corpus``: one text per line of ``path``. The tokenizer the tiny model
    is trained with (one trained on these texts, unless ``nlp.tokenizer`` names one) is kept
    in the run folder as ``tokenizer/``: fine-tuning the encoder needs the same token ids."""
    opts = cfg.options
    texts = read_corpus(path)
    data = corpus_data(opts, texts, {"corpus": f"{path}: {len(texts)} texts"})
    if opts.model == TINY:
        data.files = {"tokenizer": Path(data.corpus.tokenizer.name_or_path)}
        data.info["fine-tune with"] = ("--model tiny --set nlp.tokenizer=<this run folder>/tokenizer "
                                       "(the token ids this encoder learned)")
    return data


def build_data(cfg, table: TextTable, split: Split, task: TaskSpec) -> DomainData:
    """Datasets for the engine; the cpu preset's subsampling is logged with its counts.
    Labels are class ids for a ``ce`` task and floats otherwise."""
    opts = cfg.options
    info: dict = {f"data note {i + 1}": n for i, n in enumerate(table.notes)}
    train = subsample(split.train, opts.max_train, cfg.seed)
    val = subsample(split.val, opts.max_val, cfg.seed + 1)
    for name, kept, full in (("train", train, split.train), ("val", val, split.val)):
        subsampled = f" of {len(full)}, subsampled by nlp.max_{name}" if len(kept) < len(full) else ""
        info[f"{name} rows"] = f"{len(kept)}{subsampled}"
    info["test rows"] = len(split.test)
    if cfg.corpus:
        texts = read_corpus(cfg.corpus)
        info["corpus"] = f"{cfg.corpus}: {len(texts)} texts"
    else:
        texts = corpus_texts(table, train)
        info["corpus"] = f"task training text (TAPT): {len(texts)} texts"
    data = corpus_data(opts, texts, info)
    tokenizer = data.corpus.tokenizer

    def examples(rows):
        return Examples([table.inputs[i] for i in rows], table.labels[rows])

    data.train, data.val, data.test = examples(train), examples(val), examples(split.test)
    data.task_collate = TaskCollate(tokenizer, opts.max_length, task.loss == "ce")
    return data
