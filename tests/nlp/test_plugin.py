"""The nlp plugin: what it registers, its presets, metrics on its batches, the missing extra."""

import importlib
import sys

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn import metrics as skm

from tapweight import Split
from tapweight.job.runner import resolve
from tapweight.method.final import evaluate, predict
from tapweight.method.models import TaskModel
from tapweight.plugin.manager import build_registry
from tapweight_nlp.data import build_data
from tapweight_nlp.load import TextTable
from tapweight_nlp.tasks import DATASETS, task_spec
from tests.nlp.conftest import SENTENCES

GLUE = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte")


def test_registers_the_domain_pieces_and_every_task():
    registry = build_registry()
    domain = registry.require_domain("nlp")
    assert domain.objectives == ("nlp.mlm", "nlp.cl", "nlp.sop")
    assert registry.get("backbones", domain.backbone).name == "nlp.roberta"
    assert {"glue", "given"} <= set(domain.splits)
    for name in (*GLUE, "rct", "agnews", "imdb"):
        task = registry.task("nlp", name)
        assert task.split == "glue" and registry.get("datasets", task.dataset)
    expect = {  # name: (loss, metric, extra metrics, classes)
        "cola": ("ce", "mcc", ("accuracy",), 2), "sst2": ("ce", "accuracy", (), 2),
        "mrpc": ("ce", "accuracy", ("f1",), 2), "qqp": ("ce", "accuracy", ("f1",), 2),
        "stsb": ("mse", "pearson", ("spearman",), 0), "mnli": ("ce", "accuracy", (), 3),
        "rct": ("ce", "accuracy", (), 5), "agnews": ("ce", "accuracy", (), 4),
    }
    for name, (loss, metric, extra, classes) in expect.items():
        task = registry.task("nlp", name)
        assert (task.loss, task.metric, task.extra_metrics, task.n_classes) == \
            (loss, metric, extra, classes), name


@pytest.mark.parametrize("preset", ["cpu", "paper"])
def test_presets_resolve(preset):
    cfg = resolve("nlp", "sst2", preset=preset).cfg
    if preset == "paper":
        assert cfg.options.model == "roberta-base" and cfg.finetune.gamma == 5e-3
        assert cfg.pretrain.batch_size * cfg.pretrain.accumulate == 512
        assert (cfg.finetune.batch_size, cfg.reweight.batch_size) == (32, 32)
        assert (cfg.pretrain.lr, cfg.finetune.lr, cfg.reweight.lr) == (2e-5, 2e-5, 1.0)
        assert cfg.pretrain.optimizer == cfg.finetune.optimizer == cfg.reweight.optimizer == "adam"
        for level in (cfg.pretrain, cfg.finetune, cfg.reweight):  # "a step scheduler on all three levels"
            assert level.scheduler == "step"
        assert cfg.reweight.unroll == 1
    else:
        assert cfg.options.model == "tiny" and cfg.options.max_length == 64
        assert cfg.options.max_train > 0 and cfg.steps <= 300


#: TapWeight (TMLR 2025, §5.2): QQP and MNLI 20,000 global steps, every other data set 10,000
@pytest.mark.parametrize("task,steps", [("qqp", 20000), ("mnli", 20000), ("sst2", 10000), ("cola", 10000),
                                        ("stsb", 10000), ("rct", 10000), ("agnews", 10000), ("imdb", 10000)])
def test_paper_preset_steps_per_task(task, steps):
    assert resolve("nlp", task, preset="paper").cfg.steps == steps


def scored(nlp_config, task, labels, classes, n_outputs):
    """The core's evaluate on our batches, with the predictions it scored (the same batches,
    through ``predict``) for a reference."""
    cfg = nlp_config(task=task)
    texts = SENTENCES * 2
    table = TextTable(texts, np.array(labels, float).reshape(-1, 1), (task,),
                      parts=np.full(len(texts), "train"), classes=classes)
    everything = np.arange(len(texts))
    data = build_data(cfg, table, Split(everything, everything, everything), task_spec(DATASETS[task]))
    from tapweight_nlp.backbone import build_backbone

    torch.manual_seed(0)
    model = TaskModel(build_backbone(cfg), torch.nn.Linear(32, n_outputs))
    spec = build_registry().task("nlp", task)
    device = torch.device("cpu")
    result = evaluate(model, data.test, data.task_collate, spec, batch_size=5, device=device)
    preds, y = predict(model, data.test, data.task_collate, spec, batch_size=5, device=device)
    np.testing.assert_allclose(y.reshape(-1), labels, rtol=1e-7)  # the labels, as float32
    model.eval()
    with torch.no_grad():  # one batch of all 24: the same outputs up to float32 rounding
        outputs = model(data.task_collate([data.test[i] for i in everything])[0]).numpy()
    return result, preds, y, outputs


def test_cola_scores_mcc_and_accuracy_of_the_argmax(nlp_config):
    labels = [i % 2 for i in range(24)]
    result, predicted, _, outputs = scored(nlp_config, "cola", labels, ("unacceptable", "acceptable"), 2)
    assert predicted.tolist() == outputs.argmax(1).tolist()
    assert result["mcc"] == pytest.approx(skm.matthews_corrcoef(labels, predicted))
    assert result["accuracy"] == pytest.approx(np.mean(predicted == np.array(labels)))


def test_stsb_scores_pearson_and_spearman_of_the_regression_output(nlp_config):
    labels = [round(5 * (i % 7) / 6, 2) for i in range(24)]
    result, preds, y, outputs = scored(nlp_config, "stsb", labels, (), 1)
    # batches of 5 and one batch of 24 agree to float32 rounding (BLAS blocks by batch size)
    np.testing.assert_allclose(preds, outputs, rtol=1e-5, atol=1e-6)
    # the scores of the predictions and labels evaluate read, as SciPy computes them in float64
    p, t = preds[:, 0].astype(np.float64), y[:, 0].astype(np.float64)
    assert result["pearson"] == pytest.approx(stats.pearsonr(t, p)[0], rel=0, abs=1e-12)
    assert result["spearman"] == pytest.approx(stats.spearmanr(t, p)[0], rel=0, abs=1e-12)


def test_a_missing_transformers_is_a_module_not_found_error(monkeypatch):
    for name in [m for m in sys.modules if m.startswith("tapweight_nlp")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    with pytest.raises(ModuleNotFoundError) as err:
        importlib.import_module("tapweight_nlp.plugin")
    assert err.value.name == "transformers"
