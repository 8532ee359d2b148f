"""tapweight: task-adaptive continued pretraining with learned objective weights (TapWeight).

The public API is what this module exports: ``run`` and ``Result`` for notebooks and scripts
(docs/python-api.md), the specs and helpers for plugins (docs/hooks.md); anything else is
internal.
"""

import os

if os.environ.get("RANK", "0") != "0":  # torchrun's other ranks print errors only (see cli.py),
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")  # torch's C++ warnings too (read at import)

from tapweight.api import Result, run
from tapweight.checkpoint import load_backbone, read_weights
from tapweight.config import RunConfig, check_options
from tapweight.data import random_split
from tapweight.errors import TapweightError
from tapweight.hookspecs import hookimpl
from tapweight.models import computed_once
from tapweight.specs import (
    BackboneSpec,
    DatasetSpec,
    Domain,
    DomainData,
    ExportFormat,
    HeadSpec,
    Inputs,
    ObjectiveSpec,
    Predictor,
    Split,
    Table,
    TaskSpec,
)

__version__ = "0.1.0"
__all__ = [
    "BackboneSpec", "DatasetSpec", "Domain", "DomainData", "ExportFormat", "HeadSpec", "Inputs",
    "ObjectiveSpec", "Predictor",
    "Result", "RunConfig", "Split", "Table", "TaskSpec", "TapweightError", "check_options", "computed_once", "hookimpl",
    "load_backbone",
    "random_split", "read_weights", "run",
]
