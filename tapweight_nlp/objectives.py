"""The three pretraining objectives of TapWeight's NLP experiments, one loss each.

- ``mlm``: masked language modelling (BERT, Devlin et al., 2019; RoBERTa): 15% of the
  non-special tokens are chosen, 80% of those become ``<mask>``, 10% a random token, 10%
  stay (the draws of transformers' ``DataCollatorForLanguageModeling``), drawn on the
  batch's device from torch's generator there, so that the engine's replay sees the same
  masks and nothing is read on the host.
- ``cl``: unsupervised SimCSE (Gao et al., 2021): each sentence encoded twice under
  different dropout, in-batch negatives, cosine similarity over temperature 0.05.
- ``sop``: segment-order prediction (ALBERT, Lan et al., 2020): a text's tokens are cut
  into two halves, swapped with probability 0.5; a binary classifier tells which.

Each objective owns its head (part of θ) and receives the backbone at call time: the
engine swaps the parameters functionally, so nothing here keeps a parameter tensor.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForMaskedLM

from tapweight import load_into
from tapweight_nlp.backbone import RobertaBackbone, checkpoint_format, from_pretrained, mismatched_keys
from tapweight_nlp.tokenizer import TINY

MLM_PROBABILITY = 0.15  # BERT / RoBERTa
TEMPERATURE = 0.05  # SimCSE's τ, as in the paper


def _encoding(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


class MaskedLanguageModeling(nn.Module):
    """L_mlm: cross-entropy of the original token at the chosen positions.

    The decoder is tied to the backbone's input embeddings as in RoBERTa (read from the
    backbone at call time); ``dense``, ``layer_norm`` and ``bias`` are RoBERTa's LM head.
    """

    def __init__(self, tokenizer, hidden: int, vocab: int, eps: float):
        super().__init__()
        self.mask_id, self.vocab = tokenizer.mask_token_id, len(tokenizer)
        self.dense = nn.Linear(hidden, hidden)
        self.layer_norm = nn.LayerNorm(hidden, eps=eps)
        self.bias = nn.Parameter(torch.zeros(vocab))

    def mask(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(masked input_ids, labels) [B, L]; labels are -100 where nothing is predicted."""
        ids = batch["input_ids"]
        draw = torch.rand((3, *ids.shape), device=ids.device)
        chosen = (draw[0] < MLM_PROBABILITY) & ~batch["special_tokens_mask"].bool()
        as_mask = chosen & (draw[1] < 0.8)
        as_random = chosen & ~as_mask & (draw[2] < 0.5)  # half of the other 20%
        words = torch.randint(self.vocab, ids.shape, device=ids.device, dtype=ids.dtype)
        masked = torch.where(as_mask, self.mask_id, torch.where(as_random, words, ids))
        return masked, ids.masked_fill(~chosen, -100)

    def forward(self, backbone: RobertaBackbone, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        masked, labels = self.mask(batch)
        states = backbone.token_states({"input_ids": masked,
                                        "attention_mask": batch["attention_mask"]})  # [B, L, H]
        # the chosen positions, gathered into a size known from the shape alone (a boolean
        # index would read their count on the host): `chosen_rows` places, the spare ones
        # pointing at position 0 with target -100
        flat = labels.reshape(-1)
        chosen = flat != -100
        at = torch.nonzero_static(chosen, size=chosen_rows(flat.numel()), fill_value=0)[:, 0]  # [M]
        spare = torch.arange(at.numel(), device=at.device) >= chosen.sum()
        targets = flat[at].masked_fill(spare, -100)  # [M]
        h = self.layer_norm(F.gelu(self.dense(states.reshape(flat.numel(), -1)[at])))  # [M, H]
        logits = F.linear(h, backbone.word_embeddings, self.bias)  # [M, vocab]
        total = F.cross_entropy(logits.float(), targets, ignore_index=-100, reduction="sum")
        return total / (targets != -100).sum().clamp_min(1)  # 0 where a tiny batch drew no position


def chosen_rows(positions: int) -> int:
    """Room for MLM's chosen positions among ``positions``: their expected count plus six
    standard deviations of the binomial (a larger draw loses its last positions with odds
    below 1e-9), never more than ``positions``."""
    mean = MLM_PROBABILITY * positions
    return min(positions, math.ceil(mean + 6 * math.sqrt(mean * (1 - MLM_PROBABILITY))) + 8)


class ContrastiveLearning(nn.Module):
    """L_cl: SimCSE's InfoNCE over the batch; ``mlp`` is SimCSE's training-time pooler."""

    def __init__(self, hidden: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh())

    def forward(self, backbone: RobertaBackbone, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = _encoding(batch)
        n = inputs["input_ids"].shape[0]
        # both views in one forward: the batch twice, each copy with its own dropout
        z = self.mlp(backbone({k: torch.cat([v, v]) for k, v in inputs.items()})).float()  # [2B, H]
        z1, z2 = z[:n], z[n:]
        sim = F.cosine_similarity(z1[:, None], z2[None, :], dim=-1) / TEMPERATURE  # [B, B]
        return F.cross_entropy(sim, torch.arange(n, device=sim.device))


def reorder_segments(ids: torch.Tensor, lengths: torch.Tensor, swap: torch.Tensor,
                     cls_id: int, sep_id: int, pad_id: int) -> dict[str, torch.Tensor]:
    """``<s> A </s></s> B </s>`` from ``<s> x </s>`` with x cut into halves A, B (B, A if swap).

    ``ids`` [B, L] with ``lengths`` [B] real tokens each; the result is [B, max(L, 4)]: a
    text of more than L - 4 tokens loses its tail to make room for the two separators. One
    scatter on ``ids``'s device (no row loop, nothing read on the host).
    """
    rows, width = ids.shape[0], max(ids.shape[1], 4)
    n = width - 4  # the most content tokens that fit
    content = torch.full((rows, n), pad_id, dtype=ids.dtype, device=ids.device)
    content[:, :min(n, ids.shape[1] - 1)] = ids[:, 1:1 + n]
    c = (lengths.to(ids.device) - 2).clamp(0, n)[:, None]  # [B, 1] content tokens kept
    cut = c // 2
    swap = swap.to(ids.device)[:, None]
    j = torch.arange(n, device=ids.device)[None, :]
    first = torch.where(swap, c - cut, cut)  # length of the segment that comes first
    # content token j goes to 1 + its place in its segment, after <s> (and after the first
    # segment and two separators when its segment comes second); beyond c: the spare column
    second = (j >= cut) != swap
    place = torch.where(j >= cut, j - cut, j)
    to = torch.where(second, 3 + first + place, 1 + place)
    to = torch.where(j < c, to, width)
    out = torch.full((rows, width + 1), pad_id, dtype=ids.dtype, device=ids.device)
    out.scatter_(1, to, content)
    out[:, 0] = cls_id
    seps = torch.cat([1 + first, 2 + first, 3 + c], 1)  # [B, 3]
    out.scatter_(1, seps, torch.full_like(seps, sep_id, dtype=ids.dtype))
    attention = (torch.arange(width, device=ids.device)[None, :] < 4 + c).long()
    return {"input_ids": out[:, :width], "attention_mask": attention}


class SegmentOrderPrediction(nn.Module):
    """L_sop: cross-entropy of a linear classifier on the ``<s>`` state; label 1 = swapped."""

    def __init__(self, tokenizer, hidden: int):
        super().__init__()
        self.special = (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id)
        self.classifier = nn.Linear(hidden, 2)

    def forward(self, backbone: RobertaBackbone, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        ids = batch["input_ids"]
        swap = torch.rand(ids.shape[0], device=ids.device) < 0.5  # [B], from the device's generator (replayed)
        inputs = reorder_segments(ids.detach(), batch["attention_mask"].sum(1), swap, *self.special)
        logits = self.classifier(backbone(inputs))
        return F.cross_entropy(logits.float(), swap.long())


def build_mlm(backbone: RobertaBackbone, corpus, cfg) -> MaskedLanguageModeling:
    """The MLM objective; with a pretrained model its LM head starts from the checkpoint's."""
    config = backbone.encoder.config
    objective = MaskedLanguageModeling(corpus.tokenizer, config.hidden_size,
                                       backbone.word_embeddings.shape[0], config.layer_norm_eps)
    if cfg.options.model != TINY:
        _load_lm_head(objective, cfg.options)
    return objective


def _load_lm_head(objective: MaskedLanguageModeling, opts) -> None:
    """Copy RoBERTa's ``lm_head`` (dense, layer_norm, bias) from ``opts.model``; a head the
    checkpoint lacks is an error unless ``nlp.strict_load`` is off (then it starts afresh)."""
    model, info = from_pretrained(AutoModelForMaskedLM, opts.model)
    absent = {*info["missing_keys"], *mismatched_keys(info)}  # initialised by transformers, not read
    head = getattr(model, "lm_head", None)
    ours = objective.state_dict()
    state = {} if head is None else {k: v for k, v in head.state_dict().items()
                                     if k in ours and f"lm_head.{k}" not in absent}
    load_into(objective, state, target="nlp.mlm head", source=f"--model '{opts.model}'",
              format=checkpoint_format(model, opts.model), strict=opts.strict_load,
              option="nlp.strict_load",
              fix="a model folder with RoBERTa's lm_head (a RobertaForMaskedLM checkpoint)")


def build_cl(backbone: RobertaBackbone, corpus, cfg) -> ContrastiveLearning:
    return ContrastiveLearning(backbone.out_dim)


def build_sop(backbone: RobertaBackbone, corpus, cfg) -> SegmentOrderPrediction:
    return SegmentOrderPrediction(corpus.tokenizer, backbone.out_dim)
