"""The RoBERTa encoder (Liu et al., 2019) as a tapweight backbone.

``--model`` is a hub name or a local folder of any RoBERTa-family encoder, loaded with
``AutoModel.from_pretrained`` and without its pooler; ``--model tiny`` is a small
randomly initialised ``RobertaConfig`` for CPU runs and tests. Loading is strict: encoder
tensors missing from the checkpoint are an error naming them unless
``--set nlp.strict_load=false``, and the run log records what was loaded (transformers' own
load report, a terminal table, is kept off the screen: ours replaces it). Features are the last
hidden state of the ``<s>`` token, the representation RoBERTa's classification head
and SimCSE read. The encoder alone carries θ_b / w_b, so the proximal term covers it all.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch
import transformers
from torch import nn
from transformers import AutoModel, RobertaConfig, RobertaModel

from tapweight import LoadReport, TapweightError, load_backbone, log_file_only, plain
from tapweight_nlp.tokenizer import TINY

#: the loggers through which transformers prints its load report (5.x) or warnings (4.x)
TRANSFORMERS_REPORTS = ("transformers.utils.loading_report", "transformers.modeling_utils")


class RobertaBackbone(nn.Module):
    """``forward(inputs) -> [B, hidden]``: the ``<s>`` state; ``token_states`` gives all."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.out_dim = encoder.config.hidden_size

    def token_states(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Last hidden states [B, L, hidden] of ``input_ids``/``attention_mask`` [B, L]."""
        return self.encoder(input_ids=inputs["input_ids"],
                            attention_mask=inputs["attention_mask"]).last_hidden_state

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.token_states(inputs)[:, 0]  # the <s> token, [B, hidden]

    @property
    def word_embeddings(self) -> torch.Tensor:
        """The input embedding matrix [vocab, hidden], which the MLM decoder shares."""
        return self.encoder.get_input_embeddings().weight


def tiny_config(opts) -> RobertaConfig:
    """A small RoBERTa: ``tiny_layers`` layers of width ``tiny_hidden_size``."""
    hidden = opts.tiny_hidden_size
    return RobertaConfig(
        vocab_size=opts.tiny_vocab_size, hidden_size=hidden, num_hidden_layers=opts.tiny_layers,
        num_attention_heads=opts.tiny_heads, intermediate_size=4 * hidden,
        # RoBERTa's positions start after the padding id (1): max_length + 2 of them
        max_position_embeddings=opts.max_length + 2, type_vocab_size=1,
        pad_token_id=1, bos_token_id=0, eos_token_id=2)


@contextlib.contextmanager
def _quiet_transformers():
    """transformers' own load report off the terminal and the log for the call: ours is logged."""
    loggers = [logging.getLogger(name) for name in TRANSFORMERS_REPORTS]
    levels = [logger.level for logger in loggers]
    bars = transformers.utils.logging.is_progress_bar_enabled()
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    transformers.utils.logging.disable_progress_bar()  # "Loading weights" bars: noise in a log
    try:
        with log_file_only("transformers"):  # its other warnings (e.g. on sharding) to log.txt only
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
        if bars:
            transformers.utils.logging.enable_progress_bar()


def from_pretrained(auto, model: str, **kwargs) -> tuple[nn.Module, dict]:
    """``auto.from_pretrained(model)`` and its loading info: missing, unexpected and
    mismatched keys (a tensor of another shape is left initialised and reported, not raised)."""
    try:
        with _quiet_transformers():
            return auto.from_pretrained(model, output_loading_info=True, ignore_mismatched_sizes=True,
                                        **kwargs)
    except OSError as err:
        raise TapweightError(
            f"could not load model '{model}' ({plain(str(err).splitlines()[0])}): pass a local "
            "model folder with --model DIR, or --model tiny") from None


def mismatched_keys(info: dict) -> list[str]:
    """The names in ``info["mismatched_keys"]`` ((name, shape, shape) tuples in transformers)."""
    return sorted(k[0] if isinstance(k, tuple) else k for k in info["mismatched_keys"])


def checkpoint_format(model: nn.Module, name: str) -> str:
    """E.g. ``transformers RobertaForMaskedLM, local folder``: the class it was saved from."""
    config = model.config
    where = "local folder" if Path(name).expanduser().is_dir() else "hub"
    return f"transformers {'/'.join(config.architectures or [config.model_type])}, {where}"


def build_backbone(cfg) -> RobertaBackbone:
    """The encoder named by ``cfg.options.model``; ``cfg.init`` loads a saved state dict."""
    opts = cfg.options
    if opts.model == TINY:
        encoder = RobertaModel(tiny_config(opts), add_pooling_layer=False)
    else:
        encoder, info = from_pretrained(AutoModel, opts.model, add_pooling_layer=False)
        missing, mismatched = sorted(info["missing_keys"]), mismatched_keys(info)
        LoadReport("encoder nlp.roberta", f"--model '{opts.model}'", checkpoint_format(encoder, opts.model),
                   len(encoder.state_dict()) - len(missing) - len(mismatched), missing, mismatched,
                   sorted(info["unexpected_keys"]),
                   "not part of the encoder; nlp.mlm takes lm_head.* when MLM is trained",
                   ).settle(opts.strict_load, "nlp.strict_load", "a complete model folder")
    backbone = RobertaBackbone(encoder)
    if cfg.init:
        load_backbone(backbone, cfg.init, opts.strict_load, "nlp.strict_load")
    return backbone

