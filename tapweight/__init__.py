"""tapweight: task-adaptive continued pretraining with learned objective weights (TapWeight).

The public API is what this module exports: ``run`` and ``Result`` for notebooks and scripts
(docs/python-api.md), and everything a plugin needs (docs/hooks.md): the hook marker, the spec
dataclasses, checkpoint loading, cache paths, the error type. A plugin imports nothing else
from the core (a test checks the built-in domains and plugins/); the rest is internal.

Importing ``tapweight`` is cheap (no torch, no pandas): the specs, ``hookimpl``,
``check_options`` and ``TapweightError`` load at once, and the names whose modules import
torch or pandas (``run``, ``load_backbone``, ``random_split``, ...) are imported on first
use (PEP 562), so the command line and plugin registration start in well under a second.
"""

import importlib
import importlib.metadata
import os

if os.environ.get("RANK", "0") != "0":  # torchrun's other ranks print errors only (commands/cli.py),
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")  # torch's C++ warnings too (read at import)

from tapweight.config import RunConfig, check_options, setting
from tapweight.custom import TASK_TYPES, check_task_type, class_names, custom_task, data_name, is_classification
from tapweight.errors import TapweightError, run_main
from tapweight.job.log import adopt_library_handlers, log_file_only
from tapweight.paths import cache_dir, data_dir
from tapweight.plugin.hookspecs import hookimpl
from tapweight.plugin.lazy import deferred, require
from tapweight.plugin.specs import (
    BackboneSpec,
    DatasetSpec,
    Domain,
    DomainData,
    EstimatorSpec,
    ExportFormat,
    HeadSpec,
    Inputs,
    LoggerSpec,
    MethodSpec,
    ObjectiveSpec,
    Predictor,
    Split,
    Table,
    TaskSpec,
)

__version__ = importlib.metadata.version("tapweight")  # pyproject.toml's, the one place it is set

#: exported names whose modules import torch or pandas: loaded when first used
_LAZY = {
    "run": "tapweight.commands.api", "Result": "tapweight.commands.api",
    "load_backbone": "tapweight.job.checkpoint", "read_weights": "tapweight.job.checkpoint",
    "random_split": "tapweight.method.batches", "computed_once": "tapweight.method.models",
    **dict.fromkeys(("load_into", "LoadReport", "container", "plain", "IMAGEMOL_FINETUNED"), "tapweight.job.loading"),
    "Weighting": "tapweight.method.weightings.base", "Signal": "tapweight.method.weightings.base",
    "Estimator": "tapweight.method.estimators", "directional_fd": "tapweight.method.hypergrad",
}

__all__ = [
    "IMAGEMOL_FINETUNED", "TASK_TYPES", "BackboneSpec", "DatasetSpec", "Domain", "DomainData", "Estimator",
    "EstimatorSpec", "ExportFormat", "HeadSpec", "Inputs", "LoadReport", "LoggerSpec", "MethodSpec", "ObjectiveSpec",
    "Predictor", "Result", "RunConfig", "Signal", "Split", "Table", "TaskSpec", "TapweightError", "Weighting",
    "adopt_library_handlers", "cache_dir", "check_options", "check_task_type", "class_names", "computed_once",
    "container", "custom_task", "data_dir", "data_name", "deferred", "directional_fd", "hookimpl", "is_classification",
    "load_backbone", "load_into", "log_file_only", "plain", "random_split", "read_weights", "require", "run",
    "run_main", "setting",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tapweight' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
