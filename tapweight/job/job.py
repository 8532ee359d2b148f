"""What a run is before it runs: its config and the registered pieces the config names.

`tapweight.job.runner.resolve` makes one from the config layers; each seed
(`tapweight.job.seed`) builds its models and data from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tapweight.config import RunConfig
from tapweight.plugin.registry import Registry
from tapweight.plugin.specs import Domain, TaskSpec


@dataclass
class Job:
    """A resolved run: the config and the registered pieces it names (``task`` is None for
    ``tapweight pretrain``, which trains level I alone on a corpus)."""

    cfg: RunConfig
    registry: Registry
    domain: Domain
    task: TaskSpec | None
    preset: str
    preset_values: dict = field(default_factory=dict)  # what the preset set that no later layer changed
