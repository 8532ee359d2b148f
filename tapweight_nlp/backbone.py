"""The RoBERTa encoder (Liu et al., 2019) as a tapweight backbone.

``--model`` is a hub name or a local folder of any RoBERTa-family encoder, loaded with
``AutoModel.from_pretrained`` and without its pooler; ``--model tiny`` is a small
randomly initialised ``RobertaConfig`` for CPU runs and tests. Features are the last
hidden state of the ``<s>`` token, the representation RoBERTa's classification head
and SimCSE read. The encoder alone carries θ_b / w_b, so the proximal term covers it all.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModel, RobertaConfig, RobertaModel

from tapweight import TapweightError, load_backbone
from tapweight_nlp.tokenizer import TINY


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


def build_backbone(cfg) -> RobertaBackbone:
    """The encoder named by ``cfg.options.model``; ``cfg.init`` loads a saved state dict."""
    opts = cfg.options
    if opts.model == TINY:
        encoder = RobertaModel(tiny_config(opts), add_pooling_layer=False)
    else:
        try:
            encoder = AutoModel.from_pretrained(opts.model, add_pooling_layer=False)
        except OSError as err:
            raise TapweightError(
                f"could not load model '{opts.model}' ({str(err).splitlines()[0]}): pass a local "
                "model folder with --model DIR, or --model tiny") from None
    backbone = RobertaBackbone(encoder)
    if cfg.init:
        load_backbone(backbone, cfg.init)
    return backbone

