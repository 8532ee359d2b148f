"""The pretraining objectives: finite losses, gradients, masking statistics, SimCSE by hand,
segment-order labels, and the engine's functional calls and RNG replay."""

import copy
import math

import pytest
import torch
from torch import nn

from tapweight.method.models import PretrainModel
from tapweight_nlp.objectives import (
    TEMPERATURE,
    ContrastiveLearning,
    build_cl,
    build_mlm,
    build_sop,
    reorder_segments,
)
from tests.host_reads import host_reads

BUILDERS = {"mlm": build_mlm, "cl": build_cl, "sop": build_sop}


def corpus_batch(data, n=8):
    return data.corpus_collate([data.corpus[i] for i in range(n)])


@pytest.mark.parametrize("name", list(BUILDERS))
def test_each_objective_is_a_finite_scalar_whose_gradient_reaches_the_backbone(tiny, name):
    cfg, data, backbone = tiny
    objective = BUILDERS[name](backbone, data.corpus, cfg)
    backbone.train()
    torch.manual_seed(0)
    loss = objective(backbone, corpus_batch(data))
    assert loss.shape == () and math.isfinite(loss.item())
    loss.backward()
    encoder = dict(backbone.encoder.named_parameters())
    for key in ("embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight",
                "encoder.layer.0.output.dense.weight"):
        assert encoder[key].grad is not None and encoder[key].grad.abs().sum() > 0, key
    own = list(objective.parameters())
    assert own and all(p.grad is not None and p.grad.abs().sum() > 0 for p in own)


def test_mlm_masks_15_percent_of_ordinary_tokens_80_10_10(tiny):
    cfg, data, backbone = tiny
    mlm = build_mlm(backbone, data.corpus, cfg)
    tokenizer = data.corpus.tokenizer
    # 300 rows of 60 ordinary tokens between <s> and </s>, then 4 pads: 18000 candidates
    ids = torch.randint(5, len(tokenizer), (300, 66))
    ids[:, 0], ids[:, 61], ids[:, 62:] = 0, 2, 1
    special = torch.zeros_like(ids)
    special[:, [0, 61, 62, 63, 64, 65]] = 1
    batch = {"input_ids": ids, "attention_mask": 1 - special, "special_tokens_mask": special}
    before = ids.clone()
    torch.manual_seed(1)
    masked, labels = mlm.mask(batch)
    assert torch.equal(batch["input_ids"], before)  # the shared batch is not modified
    chosen = labels != -100
    assert not chosen[special.bool()].any()
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(masked[~chosen], ids[~chosen])
    rate = chosen.sum().item() / 18000  # expected 0.15, sd 0.0027
    assert abs(rate - 0.15) < 0.012
    n = chosen.sum().item()
    as_mask = (masked[chosen] == tokenizer.mask_token_id).sum().item() / n
    unchanged = (masked[chosen] == ids[chosen]).sum().item() / n
    replaced = 1 - as_mask - unchanged
    # 80 / 10 / 10 (sd about 0.01, 0.007, 0.007 with ~2700 chosen)
    assert abs(as_mask - 0.8) < 0.04 and abs(unchanged - 0.1) < 0.03 and abs(replaced - 0.1) < 0.03
    replacements = masked[chosen][(masked[chosen] != ids[chosen]) &
                                  (masked[chosen] != tokenizer.mask_token_id)]
    assert replacements.min() >= 0 and replacements.max() < len(tokenizer)
    # the engine replays torch's generator: same seed, same masks
    torch.manual_seed(1)
    again, _ = mlm.mask(batch)
    assert torch.equal(again, masked)
    torch.manual_seed(2)
    assert not torch.equal(mlm.mask(batch)[0], masked)


def test_mlm_loss_is_the_cross_entropy_at_the_chosen_positions(tiny):
    """The loss gathered into a fixed size equals a boolean-indexed cross-entropy at the same
    masks (the engine's replay: same seed, same draws); no chosen position gives 0, with a graph."""
    import torch.nn.functional as F

    cfg, data, backbone = tiny
    mlm = build_mlm(backbone, data.corpus, cfg)
    backbone.eval()
    batch = corpus_batch(data)
    torch.manual_seed(3)
    loss = mlm(backbone, batch)
    torch.manual_seed(3)
    masked, labels = mlm.mask(batch)
    states = backbone.token_states({"input_ids": masked, "attention_mask": batch["attention_mask"]})
    chosen = labels != -100
    assert chosen.sum() > 0
    h = mlm.layer_norm(F.gelu(mlm.dense(states[chosen])))
    expected = F.cross_entropy(F.linear(h, backbone.word_embeddings, mlm.bias), labels[chosen])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    none = {**batch, "special_tokens_mask": torch.ones_like(batch["special_tokens_mask"])}
    zero = mlm(backbone, none)
    assert zero.item() == 0 and zero.requires_grad


@pytest.mark.parametrize("name", list(BUILDERS))
def test_an_objective_reads_the_host_only_where_transformers_does(tiny, name):
    """The objectives' random choices are drawn on the batch's device and MLM's positions are
    gathered into a size known from the shape: a forward and backward read one value on the
    host, transformers' own (``padding_mask.all()`` in its SDPA mask builder, which drops the
    mask when no row is padded)."""
    cfg, data, backbone = tiny
    objective = BUILDERS[name](backbone, data.corpus, cfg)
    batch = corpus_batch(data)
    with host_reads() as sites:
        objective(backbone, batch).backward()
    assert [(read, file) for read, _, file in sites] == [("__bool__", "masking_utils.py")]


class Fixed(nn.Module):
    """A stand-in backbone returning given features, recording what it was called with."""

    def __init__(self, features):
        super().__init__()
        self.features, self.calls = features, []

    def forward(self, inputs):
        self.calls.append(inputs)
        return self.features


def test_cl_loss_matches_a_hand_computation():
    torch.manual_seed(0)
    n, hidden = 5, 6
    views = torch.randn(2 * n, hidden)  # rows 0..n-1: first dropout view, n..2n-1: second
    objective = ContrastiveLearning(hidden)
    backbone = Fixed(views)
    ids = torch.randint(5, 50, (n, 7))
    loss = objective(backbone, {"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    (call,) = backbone.calls
    assert torch.equal(call["input_ids"], torch.cat([ids, ids]))  # each sentence twice
    z = objective.mlp(views).detach().tolist()

    def cos(a, b):
        dot = sum(x * y for x, y in zip(a, b))
        return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    expected = 0.0
    for i in range(n):  # InfoNCE: positive z_i^(2) against every z_j^(2) of the batch
        logits = [cos(z[i], z[n + j]) / TEMPERATURE for j in range(n)]
        expected -= logits[i] - math.log(sum(math.exp(v) for v in logits))
    assert loss.item() == pytest.approx(expected / n, rel=1e-5)


def test_cl_views_differ_by_dropout_only(tiny):
    cfg, data, backbone = tiny
    cl = build_cl(backbone, data.corpus, cfg)
    batch = corpus_batch(data, 6)
    backbone.eval()
    assert cl(backbone, batch).item() < cl(backbone.train(), batch).item()  # identical views


def test_reorder_segments_by_hand():
    ids = torch.tensor([[0, 10, 11, 12, 13, 14, 2, 1, 1],
                        [0, 20, 21, 22, 23, 24, 25, 26, 2]])
    lengths = torch.tensor([7, 9])
    out = reorder_segments(ids, lengths, torch.tensor([False, True]), cls_id=0, sep_id=2, pad_id=1)
    # row 0: halves [10, 11] | [12, 13, 14] in order; row 1: 7 tokens cut to 5 to fit, swapped
    assert out["input_ids"].tolist() == [[0, 10, 11, 2, 2, 12, 13, 14, 2],
                                         [0, 22, 23, 24, 2, 2, 20, 21, 2]]
    assert out["attention_mask"].tolist() == [[1] * 9, [1] * 9]
    short = reorder_segments(torch.tensor([[0, 7, 2, 1]]), torch.tensor([3]), torch.tensor([True]),
                             0, 2, 1)
    assert short["input_ids"].tolist() == [[0, 2, 2, 2]]  # no room for the one token


def test_sop_labels_are_the_swaps_drawn_from_the_global_generator(tiny):
    cfg, data, backbone = tiny
    sop = build_sop(backbone, data.corpus, cfg)
    batch = corpus_batch(data, 12)
    features = torch.randn(12, backbone.out_dim)
    stub = Fixed(features)
    torch.manual_seed(3)
    swap = torch.rand(12) < 0.5
    torch.manual_seed(3)
    loss = sop(stub, batch)
    expected_inputs = reorder_segments(batch["input_ids"], batch["attention_mask"].sum(1), swap,
                                       0, 2, 1)
    assert torch.equal(stub.calls[0]["input_ids"], expected_inputs["input_ids"])
    expected = nn.functional.cross_entropy(sop.classifier(features), swap.long())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert 0 < swap.sum() < 12


def test_functional_call_with_other_parameters_matches_a_model_holding_them(tiny):
    """The engine swaps θ functionally: no objective may keep a parameter of its own."""
    cfg, data, backbone = tiny
    objectives = [b(backbone, data.corpus, cfg) for b in BUILDERS.values()]
    theta = PretrainModel(backbone, objectives, list(BUILDERS))
    batch = corpus_batch(data)
    torch.manual_seed(4)
    other = {k: v.detach() + 0.05 * torch.randn_like(v) for k, v in theta.named_parameters()}
    twin = copy.deepcopy(theta)
    twin.load_state_dict(other, strict=False)
    torch.manual_seed(5)
    swapped = torch.func.functional_call(theta, other, (batch,))
    torch.manual_seed(5)
    held = twin(batch)
    torch.manual_seed(5)
    original = theta(batch)
    torch.testing.assert_close(swapped, held)
    assert swapped.shape == (3,) and not torch.allclose(swapped, original)
