"""tapweight: task-adaptive continued pretraining with learned objective weights (TapWeight).

The public API for plugins is what this module exports; anything else is internal.
"""

from tapweight.checkpoint import load_backbone, read_weights
from tapweight.config import RunConfig
from tapweight.data import random_split
from tapweight.errors import TapweightError
from tapweight.hookspecs import hookimpl
from tapweight.models import computed_once
from tapweight.specs import (
    BackboneSpec,
    DatasetSpec,
    Domain,
    DomainData,
    HeadSpec,
    ObjectiveSpec,
    Split,
    Table,
    TaskSpec,
)

__version__ = "0.1.0"
__all__ = [
    "BackboneSpec", "DatasetSpec", "Domain", "DomainData", "HeadSpec", "ObjectiveSpec",
    "RunConfig", "Split", "Table", "TaskSpec", "TapweightError", "computed_once", "hookimpl", "load_backbone",
    "random_split", "read_weights",
]
