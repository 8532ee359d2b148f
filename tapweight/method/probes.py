"""Objectives that hurt by construction, for checking that learned weights work (``core.*``).

TapWeight should move weight off an objective that cannot help the task. These two, added
next to a domain's real objectives (``--set objectives=[mol.mg100,...,core.random_labels]``),
make that a known-answer experiment on any domain:

- ``core.random_labels``: a linear classifier fits labels drawn afresh for every example at
  every step (10 classes): the features learn noise;
- ``core.feature_collapse``: the features' mean square (over examples and dimensions, so
  its scale is that of a typical loss), minimised: it drives the representation towards
  zero. It is harmful only in the limit; on the way it acts as an activity penalty, and a
  fine-tuned model that is overconfident on the validation set gains from it, so it tests
  that level II stays calibrated (``metrics.overconfidence``; docs/known-answer.md).

Both read the backbone's features of the unaltered corpus batch. What the backbone takes
from a corpus batch is the corpus dataset's ``backbone_inputs(batch)`` when it defines one
(molecules: the images of ``{"image", "index"}``), else the batch itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tapweight.method.models import computed_once

N_RANDOM_CLASSES = 10


def _identity(batch):
    return batch


class Probe(nn.Module):
    """The backbone's features of a corpus batch, shared by the probes of one evaluation."""

    def __init__(self, corpus):
        super().__init__()
        self.inputs = getattr(corpus, "backbone_inputs", _identity)

    def features(self, backbone: nn.Module, batch) -> torch.Tensor:
        return computed_once("core.features", lambda: backbone(self.inputs(batch)))


class RandomLabels(Probe):
    """Cross-entropy of a linear classifier on labels drawn at random (replayed per step)."""

    def __init__(self, out_dim: int, corpus):
        super().__init__(corpus)
        self.classifier = nn.Linear(out_dim, N_RANDOM_CLASSES)

    def forward(self, backbone: nn.Module, batch) -> torch.Tensor:
        features = self.features(backbone, batch)  # [B, out_dim]
        labels = torch.randint(N_RANDOM_CLASSES, (len(features),), device=features.device)
        return F.cross_entropy(self.classifier(features).float(), labels)


class FeatureCollapse(Probe):
    """Mean square of the features: minimised, it collapses the representation."""

    def forward(self, backbone: nn.Module, batch) -> torch.Tensor:
        return self.features(backbone, batch).float().pow(2).mean()


def build_random_labels(backbone: nn.Module, corpus, cfg) -> RandomLabels:
    return RandomLabels(backbone.out_dim, corpus)


def build_feature_collapse(backbone: nn.Module, corpus, cfg) -> FeatureCollapse:
    return FeatureCollapse(corpus)
