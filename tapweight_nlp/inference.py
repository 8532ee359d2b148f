"""A finished NLP run's model outside training: new texts to score, a Hugging Face export.

``tapweight predict`` reads texts as the run's tokenizer saw them: a ``.txt`` file holds one
text per line (a sentence pair: the two texts separated by a tab); a csv, tsv, json(l) or
parquet file (with a header row) holds them in the task's text columns (``sentence``;
``sentence1`` and ``sentence2``...), or, for a one-text task, in a column named ``text`` or
its only column. An empty text is not scored. The seed's ``predictor/`` folder holds the
tokenizer and the encoder's ``config.json`` (``save_pretrained``), so a run whose
``--model`` was a hub name or a folder elsewhere predicts without it.

``tapweight export --format hf`` writes a Hugging Face model folder: ``config.json`` and
``model.safetensors`` of the encoder (``save_pretrained``) and the tokenizer's files.
``AutoModel.from_pretrained(folder, add_pooling_layer=False)`` loads it with no tensor
missing (without that argument transformers adds a randomly initialised pooler, which
the features do not use); the features tapweight trains on are
``last_hidden_state[:, 0]``, the ``<s>`` token. A fine-tuned export adds the task head,
``task_head.safetensors``: for the ``core.linear`` head, a ``torch.nn.Linear(hidden,
outputs)`` state dict applied to those features.
"""

from __future__ import annotations

import contextlib
import copy
import json
from pathlib import Path

import numpy as np
import transformers
from safetensors.torch import save_file
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig

from tapweight import Inputs, Predictor, TapweightError, plain
from tapweight_nlp.backbone import RobertaBackbone, tiny_config
from tapweight_nlp.data import Examples, TaskCollate
from tapweight_nlp.load import SUFFIXES, _columns, _read_file
from tapweight_nlp.tasks import dataset_of
from tapweight_nlp.tokenizer import TINY

HEAD_FILE = "task_head.safetensors"
#: what a seed folder holds beside ``predictor/``: what the model predicts, and (regression)
#: the targets' mean and std
MODEL_INFO, SCALER_FILE = "model.json", "target_scaler.json"


def read_texts(path: str, columns: tuple[str, ...], opts) -> Inputs:
    """The texts of ``path`` (``columns``: the task's text columns, two for a pair task), a
    table read as the run read its data (``opts``: its ``nlp.header``/``nlp.columns``), one
    row per data line: a blank line is an empty text."""
    file = Path(path)
    if file.suffix.lower() in SUFFIXES:
        frame = _read_file(file, opts, blank_lines=True).to_pandas()
        found = text_columns(list(frame.columns), columns, path)
        rows = list(zip(*(frame[c].tolist() for c in found)))
    else:
        try:
            lines = file.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise TapweightError(f"'{path}' is not UTF-8 text (one text per line)") from None
        rows = [("",) * len(columns) if not line.strip() else tuple(line.split("\t")) if len(columns) > 1
                else (line,) for line in lines]  # a blank line: an empty text, so row numbers stay the lines
    inputs, errors = [], []
    for row in rows:
        texts = tuple("" if t is None or (isinstance(t, float) and np.isnan(t)) else str(t).strip() for t in row)
        inputs.append(texts[0] if len(columns) == 1 else texts)
        if len(texts) != len(columns):
            errors.append(f"{len(texts)} tab-separated texts; this task reads {len(columns)}")
        else:
            errors.append("empty text" if not all(texts) else "")
    return Inputs(inputs, errors, source=str(path))


def text_columns(found: list[str], wanted: tuple[str, ...], path: str) -> tuple[str, ...]:
    """The task's text columns, or for a one-text task a ``text`` column or the only column."""
    if all(c in found for c in wanted):
        return wanted
    if len(wanted) == 1 and ("text" in found or len(found) == 1):
        return ("text",) if "text" in found else (found[0],)
    raise TapweightError(f"'{path}' has no text column {' and '.join(map(repr, wanted))} (columns: "
                         f"{', '.join(map(str, found))}): rename the column to {wanted[0]!r}"
                         f"{' and ' + repr(wanted[1]) if len(wanted) > 1 else ''}, or for one text name it 'text'")


def text_predictor(cfg, tokenizer, config: PretrainedConfig) -> Predictor:
    """Texts prepared as the run's: its tokenizer, ``max_length`` and text columns."""
    opts = cfg.options
    spec = dataset_of(cfg)
    columns = _columns(spec, opts)[0]

    def dataset(texts: list) -> Examples:
        return Examples(texts, np.full((len(texts), 1), np.nan))

    def save(folder: Path) -> None:
        tokenizer.save_pretrained(str(folder))
        config.save_pretrained(str(folder))

    def backbone() -> RobertaBackbone:
        return RobertaBackbone(AutoModel.from_config(config, add_pooling_layer=False))

    return Predictor(read=lambda path: read_texts(path, columns, opts), dataset=dataset,
                     collate=TaskCollate(tokenizer, opts.max_length, spec.loss == "ce"),
                     backbone=backbone, save=save)


def model_config(opts) -> PretrainedConfig:
    """The encoder's configuration: the tiny model's, or ``--model``'s ``config.json``."""
    if opts.model == TINY:
        return tiny_config(opts)
    try:
        return AutoConfig.from_pretrained(opts.model)
    except OSError as err:
        raise TapweightError(f"could not load the configuration of '{opts.model}' "
                             f"({plain(str(err).splitlines()[0])}): pass a local model folder with "
                             "--model DIR, or --model tiny") from None


def load_predictor(cfg, folder: Path) -> Predictor:
    """``Domain.load_predictor``: the tokenizer and encoder configuration saved in ``folder``."""
    return text_predictor(cfg, AutoTokenizer.from_pretrained(str(folder)), AutoConfig.from_pretrained(str(folder)))


@contextlib.contextmanager
def _no_progress_bars():
    """transformers' progress bars off while a few local files are written."""
    shown = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            transformers.utils.logging.enable_progress_bar()


#: the classifier's dense layer in a Hugging Face export: ε·I, so that its tanh is linear to
#: within (ε·|x|)²/3 relative (below 1e-6 for features |x| < 17) and ``out_proj`` = head / ε
#: gives the head's logits
DENSE_SCALE = 1e-4


def position_limit(config: PretrainedConfig) -> int:
    """Tokens per text the encoder's position table holds: RoBERTa's positions start after
    the padding id, so ``max_position_embeddings - pad_token_id - 1``."""
    return config.max_position_embeddings - (config.pad_token_id or 0) - 1


def sequence_classifier(backbone: RobertaBackbone, head: nn.Module, info: dict, scaler: Path):
    """``RobertaForSequenceClassification`` whose logits are the run's outputs: the encoder,
    a classifier whose dense layer is ``DENSE_SCALE``·I and whose ``out_proj`` is the
    ``core.linear`` head / ``DENSE_SCALE``; class names as ``id2label``; a regression head
    gives values in the targets' units (the target scaler folded into ``out_proj``)."""
    import torch
    from transformers import RobertaForSequenceClassification

    if not isinstance(head, nn.Linear):
        raise TapweightError("export --format hf --finetuned writes a sequence classifier for the "
                             f"core.linear head; this run's head is {info['head']}")
    config = copy.deepcopy(backbone.encoder.config)
    config.architectures = ["RobertaForSequenceClassification"]
    config.num_labels = info["n_outputs"]
    if info["loss"] == "ce":
        names = info["classes"] or [str(i) for i in range(info["n_outputs"])]
        config.id2label = dict(enumerate(names))
        config.label2id = {n: i for i, n in enumerate(names)}
        config.problem_type = "single_label_classification"
    else:
        config.id2label = dict(enumerate(info["label_names"]))
        config.label2id = {n: i for i, n in enumerate(info["label_names"])}
        config.problem_type = "regression"
    model = RobertaForSequenceClassification(config)
    model.roberta.load_state_dict(backbone.encoder.state_dict())
    weight, bias = head.weight.detach().double(), head.bias.detach().double()
    if info["loss"] == "mse" and scaler.is_file():  # values in the targets' units: × std + mean
        numbers = json.loads(scaler.read_text())
        std, mean = (torch.tensor(numbers[k], dtype=torch.float64) for k in ("std", "mean"))
        weight, bias = weight * std[:, None], bias * std + mean
    with torch.no_grad():
        dense = model.classifier.dense
        dense.weight.copy_(torch.eye(dense.weight.shape[0]) * DENSE_SCALE)
        dense.bias.zero_()
        model.classifier.out_proj.weight.copy_((weight / DENSE_SCALE).float())
        model.classifier.out_proj.bias.copy_(bias.float())
    return model.eval()


def write_hf(backbone: RobertaBackbone, head: nn.Module | None, folder: Path, out: Path) -> list[Path]:
    """``ExportFormat.write`` of ``hf``: the encoder (a fine-tuned export: the sequence
    classifier, `sequence_classifier`, and the head alone) and the tokenizer, whose
    ``model_max_length`` is the encoder's position limit."""
    with _no_progress_bars():
        if head is None:
            backbone.encoder.save_pretrained(str(out))
        else:
            info = json.loads((folder.parent / MODEL_INFO).read_text())
            sequence_classifier(backbone, head, info, folder.parent / SCALER_FILE).save_pretrained(str(out))
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        tokenizer.model_max_length = position_limit(backbone.encoder.config)
        tokenizer.save_pretrained(str(out))
    if head is not None:
        save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}, str(out / HEAD_FILE))
    return sorted(p for p in out.iterdir() if p.is_file())
