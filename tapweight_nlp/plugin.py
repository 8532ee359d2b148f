"""The ``nlp`` domain: RoBERTa continued pretraining for text classification (TapWeight §5.2).

Registers the domain with its ``cpu`` and ``paper`` presets, the ``nlp.roberta`` backbone,
the ``nlp.mlm``, ``nlp.cl`` and ``nlp.sop`` objectives, and the GLUE and TAP data sets and
tasks. Every ``tapweight`` command loads this module, so it imports neither transformers nor
torch: it checks that the ``tapweight[nlp]`` extra is installed (a missing one surfaces as a
``ModuleNotFoundError`` the plugin loader turns into "pip install ...") and registers
builders that import the domain's modules when a run calls them (`tapweight.plugin.lazy`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

from tapweight import (
    BackboneSpec,
    DatasetSpec,
    Domain,
    DomainData,
    ExportFormat,
    ObjectiveSpec,
    TapweightError,
    check_options,
    check_task_type,
    deferred,
    hookimpl,
    require,
    setting,
)
from tapweight_nlp.tasks import CUSTOM, DATASETS, task_spec

require("transformers", "datasets", "tokenizers")  # the [nlp] extra, found without importing it


@dataclass
class NlpOptions:
    """``--set nlp.<field>=...``; defaults are the paper's roberta-base setting."""

    model: str = setting("roberta-base", "hub name or local folder (from_pretrained), or \"tiny\"")
    strict_load: bool = setting(True, "--model / --init must hold every encoder and MLM-head tensor")
    max_length: int = setting(128, "tokens per text (pair), special tokens included")
    tokenizer: str = setting("", "a tokenizer folder instead of the model's own (tiny: trained on the corpus)")
    tiny_vocab_size: int = setting(8000, "the tiny model's BPE vocabulary, trained on the corpus")
    tiny_hidden_size: int = setting(128, "the tiny model's hidden size (a multiple of tiny_heads)")
    tiny_layers: int = setting(2, "the tiny model's transformer layers")
    tiny_heads: int = setting(2, "the tiny model's attention heads")
    text_column: str = setting("", "empty: the data set's own column names (custom task: text)")
    pair_column: str = setting("", "second text of a sentence pair")
    label_column: str = setting("", "the labels' column; empty: the data set's own (custom task: label)")
    task_type: str = setting("auto", "custom task: auto | classification | regression (auto: from the labels)")
    classes: list[str] = setting([], "custom task: class names in id order; empty: the train labels'")
    metric: str = setting("", "custom task: the selection metric; empty: accuracy (classes) or rmse")
    name: str = setting("", "custom task: the run's name in folders and tables; empty: the data file's")
    header: bool = setting(True, "false: the files' first row is data; columns are 0, 1, ... (or nlp.columns)")
    columns: list[str] = setting([], "names for a headerless file's columns, in order")
    label_base: int = setting(0, "the class id the files give the first class (1: AG News's own CSVs)")
    max_train: int = setting(0,
        "keep at most this many train rows, for a short run (0: all; the cpu preset sets a budget)")
    max_val: int = setting(0, "keep at most this many validation rows, for a short run (0: all)")

    def __post_init__(self):
        check_options("nlp", self, {
            "max_length": ">= 8", "tiny_vocab_size": ">= 261",  # 256 bytes + 5 special tokens
            "tiny_hidden_size": ">= 1", "tiny_layers": ">= 1", "tiny_heads": ">= 1",
            "max_train": ">= 0", "max_val": ">= 0"})
        check_task_type(self.task_type, "nlp.task_type")
        if self.columns and self.header:
            raise TapweightError("nlp.columns names the columns of files without a header row: "
                                 "add --set nlp.header=false")
        if self.tiny_hidden_size % self.tiny_heads:
            raise TapweightError(f"nlp.tiny_hidden_size ({self.tiny_hidden_size}) must be a multiple "
                                 f"of nlp.tiny_heads ({self.tiny_heads})")


#: the paper's NLP setting (TMLR 2025, §5.2 and appendix): roberta-base, Adam with a step
#: schedule on all three levels, lr 2e-5 on levels I and II and 1 on level III, γ = 5e-3,
#: batch 512 / 32 / 32; steps are each task's (QQP and MNLI 20,000, others 10,000, see
#: tasks.py). The paper gives no step size: StepLR(100, 0.9) is the reference code's default
#: (LevelConfig's). Level I's 512 is 128 × 4 accumulated micro-batches, so that three
#: objectives fit one 80 GB GPU; the final fine-tune (constant rate, 10 epochs) is our choice.
#: The hypergradient takes Adam's steps as SGD steps (``reweight.preconditioner=identity``, the
#: reference code's convention): Adam's exact derivative is (1 − β₁)/(√v̂ + ε) per coordinate,
#: ~10⁷ on embedding rows level II has barely seen, so on SST-2 (cpu preset, random init) the
#: hypergradient's largest value was ~19,000× its median and 16 % of its values were exactly 0
#: (the whole finite-difference step spent on rows the batch does not use); with identity
#: 12–32× and none (docs/results-cpu.md, "Text: SST-2").
PAPER = {
    "nlp.model": "roberta-base", "nlp.max_length": 128,
    **{f"{level}.{key}": value for level in ("pretrain", "finetune", "reweight", "final")
       for key, value in (("optimizer", "adam"), ("weight_decay", 0.0))},
    "final.scheduler": "constant",
    "pretrain.lr": 2e-5, "pretrain.batch_size": 128, "pretrain.accumulate": 4,
    "finetune.lr": 2e-5, "finetune.batch_size": 32, "finetune.gamma": 5e-3,
    "reweight.lr": 1.0, "reweight.batch_size": 32, "reweight.preconditioner": "identity",
    "final.lr": 2e-5, "final.batch_size": 32, "final.epochs": 10,
}

#: a CPU budget (under 10 minutes on 2 cores for SST-2): a 2-layer RoBERTa from scratch,
#: 4000 train sentences of 64 tokens, 200 steps, and larger learning rates to match.
CPU = {
    **PAPER, "nlp.model": "tiny", "nlp.max_length": 64, "nlp.max_train": 4000,
    "nlp.max_val": 1000, "steps": 200, "pretrain.batch_size": 64, "pretrain.accumulate": 1,
    "pretrain.lr": 1e-3, "finetune.lr": 1e-3, "reweight.lr": 0.05, "final.lr": 1e-3,
    "final.epochs": 3, "log_every": 10,
}

def build_data_for_predict(cfg, table, split, task) -> DomainData:
    """`build_data`, with the predictor of ``tapweight predict``
    (the run's tokenizer and model config: texts are scored as the run read them)."""
    from tapweight_nlp import inference
    from tapweight_nlp.data import build_data

    data = build_data(cfg, table, split, task)
    return replace(data, predictor=inference.text_predictor(cfg, data.corpus.tokenizer,
                                                            inference.model_config(cfg.options)))


DOMAIN = Domain(
    name="nlp",
    description="RoBERTa continued pretraining (MLM, SimCSE, segment order) on text tasks",
    options=NlpOptions,
    backbone="nlp.roberta",
    objectives=("nlp.mlm", "nlp.cl", "nlp.sop"),
    build_data=deferred("tapweight_nlp.plugin:build_data_for_predict"),
    splits={"glue": deferred("tapweight_nlp.data:glue_split"), "given": deferred("tapweight_nlp.data:given_split"),
            "files": deferred("tapweight_nlp.data:files_split")},
    presets={"cpu": CPU, "paper": PAPER},
    load_predictor=deferred("tapweight_nlp.inference:load_predictor"),
    exports=(ExportFormat("hf", deferred("tapweight_nlp.inference:write_hf"),
                          "Hugging Face model folder (save_pretrained): config, weights, tokenizer; "
                          "AutoModel.from_pretrained loads it"),),
    build_corpus=deferred("tapweight_nlp.data:build_corpus"),
)


@hookimpl
def register_domains(register):
    register(DOMAIN)


def _roberta(cfg, data):
    from tapweight_nlp.backbone import build_backbone

    return build_backbone(cfg)


@hookimpl
def register_backbones(register):
    register(BackboneSpec("nlp.roberta", _roberta,
                          "RoBERTa-family encoder (--model NAME|DIR|tiny), <s> features"))


@hookimpl
def register_objectives(register):
    register(ObjectiveSpec("nlp.mlm", deferred("tapweight_nlp.objectives:build_mlm"),
                           "masked language modelling, 15%, 80/10/10"))
    register(ObjectiveSpec("nlp.cl", deferred("tapweight_nlp.objectives:build_cl"),
                           "SimCSE contrastive, dropout views, τ = 0.05"))
    register(ObjectiveSpec("nlp.sop", deferred("tapweight_nlp.objectives:build_sop"),
                           "segment-order prediction, halves swapped p=0.5"))


@hookimpl
def register_datasets(register):
    for dataset in DATASETS.values():
        register(DatasetSpec(f"nlp.{dataset.name}", partial(deferred("tapweight_nlp.load:load_table"), dataset),
                             dataset.description))
    register(DatasetSpec("nlp.custom", deferred("tapweight_nlp.custom:load"), CUSTOM.description))


@hookimpl
def register_tasks(register):
    for dataset in DATASETS.values():
        register(task_spec(dataset))
    register(replace(task_spec(CUSTOM), split="files", fit=deferred("tapweight_nlp.custom:fit")))
