"""The values a run uses where its config leaves the choice to the domain.

``config.yaml`` keeps what the user gave: ``objectives: []``, ``backbone: ''`` and ``head: ''``
mean "the domain's defaults". These functions name what that resolves to, through the
registry alone (no torch): the runner trains on them and ``tapweight show`` prints them.
"""

from __future__ import annotations

from tapweight.config import RunConfig
from tapweight.plugin.registry import Registry
from tapweight.plugin.specs import Domain


def objective_names(cfg: RunConfig, registry: Registry, domain: Domain) -> list[str]:
    """The registered names of the objectives the method trains on: the one a method whose
    argument is an objective names (``single:<name>``), else ``cfg.objectives``, else the
    domain's defaults (what `Weighting.objectives` of the core's methods gives, read
    from the registry alone for ``tapweight show``)."""
    name, _, argument = cfg.method.partition(":")
    if argument and registry.get("methods", name).argument == "objective":
        wanted = [argument]
    else:
        wanted = cfg.objectives or list(domain.objectives)
    return [registry.get("objectives", n, domain.name).name for n in wanted]


def backbone_name(cfg: RunConfig, domain: Domain) -> str:
    return cfg.backbone or domain.backbone


def head_name(cfg: RunConfig, domain: Domain) -> str:
    return cfg.head or domain.head
