"""Config layers: precedence, domain-option aliases, saved configs that load back."""

import re
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from tapweight import TapweightError, check_options
from tapweight.config import field_help, option_rows, setting, to_yaml
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

    plain: int = setting(1, "one")
    listed: list[int] = setting([1], "a list, copied for each instance")
    bare: float = 0.0


@dataclass
class _Subclass(_Described):
    plain: int = setting(2, "the subclass's own")
    listed: list[int] = field(default_factory=lambda: [2])


def test_field_help_is_each_fields_setting_text_or_its_bases():
    assert field_help(_Described) == {"plain": "one", "listed": "a list, copied for each instance", "bare": ""}
    assert field_help(_Subclass) == {"plain": "the subclass's own", "listed": "a list, copied for each instance",
                                     "bare": ""}
    first, second = _Described(), _Described()
    first.listed.append(2)
    assert second.listed == [1] and _Subclass().plain == 2


NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?:e-?\d+)?(?![\w.])")


def wrong_defaults(rows: list[tuple[str, str, str]]) -> list[str]:
    """Keys whose help quotes a default the same key has at another level but not at its own
    (the levels share help texts with their base: a base's "1e-5" under a level whose default
    is 0.0 is wrong)."""
    def value(text: str):
        try:
            return float(text)
        except ValueError:
            return None

    wrong = []
    for key, default, text in rows:
        leaf = key.rpartition(".")[2]
        others = {value(d) for k, d, _ in rows if k.rpartition(".")[2] == leaf} - {value(default), None}
        quoted = {float(n) for n in NUMBER.findall(text)}
        wrong += [f"{key} = {default}: '{text}'" for v in others & quoted if v != value(default)]
    return wrong


def test_each_help_text_agrees_with_its_default():
    """What `tapweight list options` and the configuration page say of a key never quotes another
    level's default as its own; the check fails on the text reweight.weight_decay once had."""
    assert wrong_defaults(option_rows()) == []
    bad = [("pretrain.weight_decay", "1e-05", "weight decay (1e-5: ImageMol's SGD setting)"),
           ("reweight.weight_decay", "0.0", "weight decay (1e-5: ImageMol's SGD setting)")]
    assert wrong_defaults(bad) == ["reweight.weight_decay = 0.0: 'weight decay (1e-5: ImageMol's SGD setting)'"]


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
