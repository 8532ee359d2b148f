"""The text data sets and tasks of TapWeight's NLP experiments (TMLR 2025, §5.2).

GLUE (Wang et al., 2019) with the paper's protocol — the GLUE dev set is the test set and
the GLUE training set is split 8:1 into train and val — and the TAP benchmarks of
Gururangan et al. (2020): PubMed 20k RCT, AG News and IMDB. Each data set names its text
columns (two for sentence-pair tasks), its label column, its classes (none: regression)
and where the Hugging Face hub keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass

from tapweight import TaskSpec


@dataclass(frozen=True)
class TextDataset:
    """How one labelled text data set is laid out, on the hub and in local files."""

    name: str
    hub: str  # Hugging Face hub repository
    hub_config: str | None
    text_columns: tuple[str, ...]  # one column, or two for sentence pairs
    classes: tuple[str, ...]  # class names in label-id order; () = regression
    label_column: str = "label"
    metric: str = "accuracy"
    extra_metrics: tuple[str, ...] = ()
    description: str = ""

    @property
    def loss(self) -> str:
        return "ce" if self.classes else "mse"


def _glue(name, columns, classes, description, metric="accuracy", extra=()) -> TextDataset:
    return TextDataset(name, "nyu-mll/glue", name, columns, classes, metric=metric,
                       extra_metrics=extra, description=f"GLUE {description}")


DATASETS: dict[str, TextDataset] = {d.name: d for d in (
    _glue("cola", ("sentence",), ("unacceptable", "acceptable"),
          "CoLA: grammatical acceptability", metric="mcc", extra=("accuracy",)),
    _glue("sst2", ("sentence",), ("negative", "positive"), "SST-2: movie-review sentiment"),
    _glue("mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"),
          "MRPC: paraphrase", extra=("f1",)),
    _glue("stsb", ("sentence1", "sentence2"), (), "STS-B: semantic similarity 0-5",
          metric="pearson", extra=("spearman",)),
    _glue("qqp", ("question1", "question2"), ("not_duplicate", "duplicate"),
          "QQP: duplicate questions", extra=("f1",)),
    _glue("mnli", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"),
          "MNLI: entailment (matched dev as test)"),
    _glue("qnli", ("question", "sentence"), ("entailment", "not_entailment"),
          "QNLI: question answering entailment"),
    _glue("rte", ("sentence1", "sentence2"), ("entailment", "not_entailment"),
          "RTE: textual entailment"),
    TextDataset("rct", "armanc/pubmed-rct20k", None, ("text",),
                ("background", "objective", "methods", "results", "conclusions"),
                description="PubMed 20k RCT: role of a sentence in an abstract (TAP)"),
    TextDataset("agnews", "fancyzhx/ag_news", None, ("text",),
                ("world", "sports", "business", "sci/tech"),
                description="AG News: news topic (TAP)"),
    TextDataset("imdb", "stanfordnlp/imdb", None, ("text",), ("neg", "pos"),
                description="IMDB: movie-review sentiment (TAP)"),
)}


#: the task for any labelled file (tapweight_nlp.custom): a text column, a label column; its
#: classes, loss and metric come from the data or the options when it is fitted
CUSTOM = TextDataset("custom", "", None, ("text",), ("class",), label_column="label",
                     description="your own labelled text file or train/dev/test folder (--data; "
                                 "nlp.text_column, nlp.pair_column, nlp.label_column)")


def dataset_of(cfg) -> TextDataset:
    """The data set a run reads: a built-in one, or the custom task's, laid out by the options."""
    if cfg.task != CUSTOM.name:
        return DATASETS[cfg.task]
    opts = cfg.options  # named after the label column: predictions are pred_<label column>
    return TextDataset(opts.label_column or CUSTOM.label_column, "", None, CUSTOM.text_columns, tuple(opts.classes),
                       label_column=CUSTOM.label_column, description=CUSTOM.description)


#: the paper's global steps (TapWeight, TMLR 2025, §5.2): QQP and MNLI 20,000, others 10,000
PAPER_STEPS = {"qqp": 20_000, "mnli": 20_000}
DEFAULT_STEPS = 10_000


def task_spec(dataset: TextDataset) -> TaskSpec:
    """One task per data set, under the paper's GLUE split, with the paper's steps."""
    return TaskSpec(domain="nlp", name=dataset.name, dataset=f"nlp.{dataset.name}", split="glue",
                    loss=dataset.loss, metric=dataset.metric,
                    extra_metrics=dataset.extra_metrics, n_classes=len(dataset.classes),
                    defaults={"steps": PAPER_STEPS.get(dataset.name, DEFAULT_STEPS)},
                    description=dataset.description, classes=dataset.classes)
