"""Config layers: precedence, domain-option aliases, saved configs that load back."""

import re
from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from tapweight import TapweightError, check_options
from tapweight.config import field_help, option_rows, to_yaml
from tapweight.job.runner import resolve
from tapweight.plugin import manager as plugins
from tests.test_cli import cli


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


@dataclass
class _Described:
    """A class whose fields say what they are as the config's do."""

    plain: int = 1  # on its line
    # above it,
    # on two lines
    above: str = ""  # and on its line
    bare: float = 0.0

    # a comment after a blank line describes the field below only when directly above it

    after_blank: int = 0


@dataclass
class _Subclass(_Described):
    plain: int = 2  # the subclass's own
    bare: float = 1.0


def test_field_help_reads_the_comments_on_and_just_above_each_field():
    assert field_help(_Described) == {"plain": "on its line", "above": "above it, on two lines and on its line",
                                      "bare": "", "after_blank": ""}
    assert field_help(_Subclass)["plain"] == "the subclass's own" and field_help(_Subclass)["above"].startswith("above")


def test_every_config_key_and_domain_option_has_a_description():
    """What `tapweight list options [DOMAIN]` and the configuration page show."""
    import importlib

    classes = [("", None)]
    for domain, module, name in (("mol", "tapweight_mol.options", "MolOptions"),
                                 ("nlp", "tapweight_nlp.plugin", "NlpOptions"),
                                 ("tabular", "tapweight_tabular.options", "TabularOptions")):
        try:
            classes.append((domain, getattr(importlib.import_module(module), name)))
        except ImportError:  # a domain this session does not install
            continue
    for domain, options in classes:
        missing = [key for key, _, text in option_rows(domain, options) if not text]
        assert not missing, f"keys without a description: {missing}"


def test_list_options_shows_a_domains_keys_with_their_meaning(capsys):
    pytest.importorskip("transformers")
    assert cli("list", "options", "nlp") == 0
    shown = capsys.readouterr().out
    assert "nlp.max_train" in shown and "keep at most this many train rows" in shown and "finetune.gamma" in shown
    assert cli("list", "options", "nosuchdomain") == 2
