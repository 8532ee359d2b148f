"""Config layers: precedence, domain-option aliases, saved configs that load back."""

import re
from types import SimpleNamespace

import pytest

from tapweight import TapweightError, check_options
from tapweight.config import to_yaml
from tapweight.job.runner import resolve
from tapweight.plugin import manager as plugins


def test_precedence_task_preset_file_options_set(toy, tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("steps: 7\npretrain:\n  lr: 0.3\ntoy:\n  hidden: 5\n")
    job = resolve("toy", "blobs", "cpu", str(cfg_file), {"steps": 9}, ["pretrain.lr=0.4"])
    cfg = job.cfg
    assert cfg.pretrain.batch_size == 32  # preset
    assert cfg.steps == 9  # command-line option beats the file
    assert cfg.pretrain.lr == 0.4  # --set beats everything
    assert cfg.options.hidden == 5  # `toy:` in a file means the domain's options
    assert cfg.reweight.lr == 50.0 and cfg.finetune.gamma == 1e-3  # preset, paper default


def test_task_defaults_apply(toy):
    assert resolve("toy", "blobs-reg", "cpu").cfg.head == "toy.double"


def test_saved_config_round_trips(toy, tmp_path):
    job = resolve("toy", "blobs", "cpu", sets=["toy.noise=0.25", "seeds=[1,2]"])
    saved = tmp_path / "config.yaml"
    saved.write_text(to_yaml(job.cfg))
    again = resolve("toy", "blobs", "paper", str(saved), registry=plugins.build_registry())
    assert again.cfg == job.cfg


@pytest.mark.parametrize("rule,inside,outside", [
    (">= 1", [1, 7], [0, -1, float("nan")]),
    ("> 0", [1e-9, 3], [0, -2]),
    ("<= 5", [5, -1], [5.5]),
    ("< 1", [0.99], [1, 2]),
    ("in [0, 1)", [0, 0.5], [1, -0.1, 1.5]),
    ("in (0, 1]", [1, 0.3], [0, 1.01]),
    ("in [0, 1]", [0, 1], [-1e-9, 1 + 1e-9]),
])
def test_check_options_reads_its_range_rules(rule, inside, outside):
    for value in inside:
        check_options("dom", SimpleNamespace(x=value), {"x": rule})
    for value in outside:
        with pytest.raises(TapweightError, match=rf"^dom\.x must be {re.escape(rule)}, got {value}$"):
            check_options("dom", SimpleNamespace(x=value), {"x": rule})


def test_a_malformed_range_rule_is_a_bug_not_a_user_error():
    with pytest.raises(ValueError, match="unknown range rule"):
        check_options("dom", SimpleNamespace(x=1), {"x": "between 0 and 1"})
