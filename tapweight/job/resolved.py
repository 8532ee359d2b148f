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
    defaults of its backbone or domain (what `Weighting.objectives` of the core's methods gives, read
    from the registry alone for ``tapweight show``)."""
    name, _, argument = cfg.method.partition(":")
    if argument and registry.get("methods", name).argument == "objective":
        wanted = [argument]
    else:
        wanted = cfg.objectives or default_objectives(cfg, registry, domain)
    return [registry.get("objectives", n, domain.name).name for n in wanted]


def default_objectives(cfg: RunConfig, registry: Registry, domain: Domain) -> list[str]:
    """What a run whose config names no objectives trains on: its backbone's defaults
    (`BackboneSpec.objectives`), else its domain's."""
    backbone = registry.get("backbones", backbone_name(cfg, domain), domain.name)
    return list(backbone.objectives or domain.objectives)


def backbone_name(cfg: RunConfig, domain: Domain) -> str:
    return cfg.backbone or domain.backbone


def head_name(cfg: RunConfig, domain: Domain) -> str:
    return cfg.head or domain.head


def encoder_source(cfg: RunConfig) -> str:
    """Where the backbone's starting weights come from: ``--init``, a domain's ``model``
    option (``--model``; ``tiny``: a small model built from scratch), or nowhere."""
    model = getattr(cfg.options, "model", "")
    named = (f"{cfg.domain}.model={model} (random weights: the small model built from scratch)" if model == "tiny"
             else f"--model {model}" if model else "")
    if cfg.init:
        return f"--init {cfg.init}" + (f", over the architecture of {named}" if named else "")
    return named or "random weights (no --init)"


def preset_line(preset: str, values: dict) -> str:
    """The run log's line of what the preset set (and no later layer changed)."""
    return f"preset {preset} set: " + (", ".join(f"{k}={v}" for k, v in values.items()) or "nothing")
