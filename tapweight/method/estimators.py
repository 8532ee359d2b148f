"""The hypergradient's estimators: what ``reweight.hypergrad`` selects, and ``auto``'s choice.

An estimator takes the K directional derivatives ⟨∇L_k(θ), d⟩ of eq. (1) of hypergrad.py
(``directional``), or the whole implicit hypergradient of eq. (2) (``implicit``, with
``needs_hessians``). Each is one `Estimator` class, registered through the
``register_estimators`` hook as an ``EstimatorSpec`` (the core's in tapweight/plugin/builtins.py,
a plugin's in its own module), e.g. a backward difference (θ − εd) against level I's own losses::

    class BackwardDifference(Estimator):
        cost, precision = 1.0, "level_one"

        def directional(self, step, direction):
            one = step.pretrain
            flipped = [None if d is None else -d for d in direction]
            return -directional_fd(lambda ps: one.evaluate(ps, self.precision), one.theta, flipped,
                                   self.settings.fd_radius, one.local_losses)

    @hookimpl
    def register_estimators(register):
        register(EstimatorSpec("fd-backward", BackwardDifference, "θ − εd against level I's losses"))

The config check (`check`), ``auto`` (`choose`), the engine (`build`) and
the benchmarks (bench/workload.py, bench/estimators.py) read that registry and nothing else.

**``auto``** is the cheapest estimator (``cost``: extra forwards of the level I batch) that
is ``default``-grade for the run's settings: its error, measured on real batches by
``python -m bench estimators``, is at most 5 % of the hypergradient's validation-batch variance,
the noise it has anyway (docs/benchmarks.md, "The default estimator"). Exactness stays
selectable: ``jvp`` (forward mode) and ``fd`` (a central difference in float32).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch

from tapweight.errors import TapweightError
from tapweight.method.hypergrad import (
    Hypergradient,
    Problem,
    directional_fd,
    directional_jvp,
    named,
    norm,
)
from tapweight.method.inverse import conjugate_gradient, largest_eigenvalue, neumann, warn_once
from tapweight.method.levels import InnerStep, Precision, Vector
from tapweight.method.models import tf32_allowed
from tapweight.plugin.lazy import deferred

if TYPE_CHECKING:
    from tapweight.plugin.registry import Registry
    from tapweight.plugin.specs import EstimatorSpec


class Estimator:
    """One way of computing the hypergradient; ``settings`` is the run's ``cfg.reweight``.

    Its class attributes are what ``auto`` reads: ``cost``, ``exact``, ``default`` with
    `default_for` (in which settings it meets the default's criterion), `refuses`
    (which settings it cannot compute), and ``precision``. ``name`` is its registered name.
    """

    name: str = ""
    #: extra no-grad forwards of the level I batch per inner step, as ``bench step`` measures them
    cost: ClassVar[float] = float("inf")
    #: the error is rounding only (the exactness tests hold it to 1e-6): in float32 without
    #: TF32 or autocast, the only arithmetic those tests run
    exact: ClassVar[bool] = False
    #: within the default's accuracy criterion (module docstring) wherever ``default_for`` says
    default: ClassVar[bool] = False
    needs_hessians: ClassVar[bool] = False
    #: in which precision ``step.pretrain.evaluate`` runs (levels.Precision)
    precision: Precision = "float32"

    def __init__(self, cfg):
        self.settings, self.amp = cfg.reweight, cfg.amp

    @classmethod
    def refuses(cls, cfg) -> str | None:
        """Why this estimator cannot compute ``cfg``'s hypergradient (a config error), or None."""
        adam = [name for name in ("pretrain", "finetune") if getattr(cfg, name).optimizer != "sgd"]
        if cfg.reweight.unroll > 1 and adam:
            return (f"reweight.unroll={cfg.reweight.unroll} is differentiated exactly through SGD steps only, "
                    f"and {' and '.join(adam)} use {getattr(cfg, adam[0]).optimizer}: set reweight.unroll=1 "
                    "(exact for Adam too), the optimizers to sgd, or reweight.hypergrad=neumann or cg")
        return None

    @classmethod
    def default_for(cls, cfg, device: torch.device | None) -> bool:
        """Whether ``auto`` may pick this estimator for ``cfg`` on ``device`` (None: the CPU):
        where it is measured to meet the criterion."""
        return cls.default

    def directional(self, step: InnerStep, direction: Vector) -> torch.Tensor:
        raise NotImplementedError

    def implicit(self, problem: Problem) -> torch.Tensor:
        raise NotImplementedError


class CentralDifference(Estimator):
    """Two no-grad float32 forwards (no TF32) at θ ± εd: O(ε²), Betty's ``darts`` scheme (at 0.01).
    ``auto`` picks it at unroll 1 where ``fd-forward`` cannot run (``hyper_fraction < 1``)."""

    cost, default = 2.0, True

    @classmethod
    def default_for(cls, cfg, device: torch.device | None) -> bool:
        return cfg.reweight.unroll == 1  # T differences add up their errors: jvp then

    def directional(self, step: InnerStep, direction: Vector) -> torch.Tensor:
        return directional_fd(lambda ps: step.pretrain.evaluate(ps, self.precision), step.pretrain.theta, direction,
                              self.settings.fd_radius)


class ForwardDifference(Estimator):
    """One no-grad forward at θ + εd, less level I's own L(θ): O(ε), at the floor of a full-batch
    estimate (plain + one forward). The forward runs exactly as level I did (its autocast and
    TF32), so that the two loss vectors round alike."""

    cost, default = 1.0, True
    precision: Precision = "level_one"

    @classmethod
    def refuses(cls, cfg) -> str | None:
        if cfg.reweight.hyper_fraction != 1:
            return ("reweight.hypergrad=fd-forward reuses level I's losses on its whole batch: it needs "
                    "reweight.hyper_fraction=1 (or use reweight.hypergrad=fd or jvp)")
        return super().refuses(cfg)

    @classmethod
    def default_for(cls, cfg, device: torch.device | None) -> bool:
        """Only where level I rounds as float32 does: under bf16 autocast the difference of two
        bf16-rounded loss vectors at radius 0.001 is rounding (relative error 8.8, cosine −0.65 on
        the unrolled problem: docs/method.md), and TF32 (CUDA's default for convolutions) keeps
        10 bits of mantissa, as bf16 keeps 8."""
        tf32 = device is not None and device.type == "cuda" and tf32_allowed()
        return cfg.reweight.unroll == 1 and cfg.amp == "no" and not tf32

    def directional(self, step: InnerStep, direction: Vector) -> torch.Tensor:
        return directional_fd(lambda ps: step.pretrain.evaluate(ps, self.precision), step.pretrain.theta, direction,
                              self.settings.fd_radius, step.pretrain.local_losses)


class ForwardMode(Estimator):
    """One forward-mode JVP (torch.func.jvp) in float32 without TF32: exact, in the arithmetic
    the exactness tests run (TF32 keeps 10 mantissa bits: ~1e-3); the default for unroll > 1,
    where the differences' errors would add up over the T inner steps."""

    cost, exact, default = 2.6, True, True
    precision: Precision = "float32"

    def directional(self, step: InnerStep, direction: Vector) -> torch.Tensor:
        return directional_jvp(lambda ps: step.pretrain.evaluate(ps, self.precision), step.pretrain.theta, direction)


class Implicit(Estimator):
    """Eq. (2): v = H_ft⁻¹ u, z = H_pt⁻¹ [2γ v_b; 0], dL_val/dλ_k = −⟨∇L_k(θ), z⟩ (a central
    difference at θ after the step); ``inverse(hvp, v, name)`` solves Hx = v."""

    needs_hessians = True

    @classmethod
    def refuses(cls, cfg) -> str | None:
        return None  # the optimality conditions hold whatever the optimizers and unroll

    def implicit(self, problem: Problem) -> torch.Tensor:
        names = problem.names
        v = named(names.w, self.inverse(problem.hvp_finetune, problem.u, "H_ft"))
        g_theta = {t: 2 * problem.gamma * x for t, x in names.on_theta(v).items()}  # [2γ v_b; 0]
        g_theta = [g_theta.get(n, torch.zeros_like(p)) for n, p in zip(names.theta, problem.theta_after)]
        z = self.inverse(problem.hvp_pretrain, g_theta, "H_pt")
        last = problem.steps[-1].pretrain
        return -directional_fd(lambda ps: last.evaluate(ps, "float32"), problem.theta_after, z,
                               self.settings.fd_radius)

    def inverse(self, hvp, v: Vector, name: str) -> Vector:
        raise NotImplementedError


class NeumannSeries(Implicit):
    """H⁻¹ by ``iterations`` Neumann terms, the step 1/‖H‖ by power iteration unless set."""

    def inverse(self, hvp, v: Vector, name: str) -> Vector:
        r = self.settings
        alpha = r.neumann_alpha
        if alpha <= 0:
            top = largest_eigenvalue(hvp, v, r.curvature_iterations)
            alpha = 1.0 / top if top > 0 else 1.0
        x = neumann(hvp, v, r.iterations, alpha)
        residual = float(norm([a - b for a, b in zip(hvp(x), v)]) / max(float(norm(v)), 1e-30))
        if residual > 0.5:
            warn_once(f"Neumann series for {name}⁻¹ far from converged (relative residual "
                      f"{residual:.2f} after {r.iterations} terms, alpha={alpha:.3g}); raise "
                      "reweight.iterations, or use reweight.hypergrad=cg or fd.")
        return x


class ConjugateGradient(Implicit):
    """H⁻¹ by ``iterations`` conjugate-gradient steps, stopping at relative residual ``cg_tol``."""

    def inverse(self, hvp, v: Vector, name: str) -> Vector:
        return conjugate_gradient(hvp, v, self.settings.iterations, self.settings.cg_tol)


def registered(registry: Registry | None = None) -> dict[str, EstimatorSpec]:
    """The estimators the plugins register (``registry``: the loaded plugins' by default),
    in registration order, the core's first."""
    if registry is None:
        from tapweight.plugin.manager import build_registry

        registry = build_registry()
    return registry.tables["estimators"]


def classes(registry: Registry | None = None) -> dict[str, type[Estimator]]:
    """Name → `Estimator` subclass of every registered estimator."""
    found = {}
    for name, spec in registered(registry).items():
        cls = spec.estimator.resolve() if isinstance(spec.estimator, deferred) else spec.estimator
        if not (isinstance(cls, type) and issubclass(cls, Estimator)):
            raise TapweightError(f"estimator '{name}' registers a {type(cls).__name__}, not a tapweight "
                                 "Estimator subclass")
        found[name] = cls
    return found


def names(registry: Registry | None = None) -> list[str]:
    """What ``reweight.hypergrad`` accepts."""
    return ["auto", *registered(registry)]


def choose(cfg, device: torch.device | None = None, registry: Registry | None = None) -> tuple[str, str]:
    """The estimator that computes ``cfg``'s hypergradient on ``device`` (None: the CPU), and
    why, as one phrase for the run's log: ``cfg.reweight.hypergrad`` when it names one; for
    ``auto`` the cheapest ``default``-grade estimator that can run ``cfg`` (the cheapest exact
    one if none can: its refusal is then the config error)."""
    chosen = cfg.reweight.hypergrad
    if chosen != "auto":
        return chosen, f"reweight.hypergrad={chosen}"
    table = classes(registry)
    fits = sorted((cls.cost, name) for name, cls in table.items()
                  if cls.default_for(cfg, device) and not cls.refuses(cfg))
    settings = (f"unroll {cfg.reweight.unroll}, amp {cfg.amp}, hyper_fraction {cfg.reweight.hyper_fraction:g}, "
                f"on {'the CPU' if device is None else device.type}")
    if not fits:
        name = min((cls.cost, name) for name, cls in table.items() if cls.exact)[1]
        return name, f"auto: no default-grade estimator runs these settings ({settings}); the cheapest exact one"
    cost, name = fits[0]
    cheaper = [f"{n} ({cls.refuses(cfg) or 'not measured to meet it at these settings'})"
               for n, cls in table.items() if cls.default and cls.cost < cost]
    reason = (f"auto: the cheapest estimator measured to meet the default's accuracy criterion at these "
              f"settings ({settings}), {cost:g} extra forward(s) of the level I batch")
    return name, reason + (f"; not {', not '.join(cheaper)}" if cheaper else "")


def check(cfg, registry: Registry | None = None) -> None:
    """One line naming the problem if ``cfg.reweight.hypergrad`` is unknown or cannot run ``cfg``."""
    chosen, known = cfg.reweight.hypergrad, names(registry)
    if chosen not in known:
        raise TapweightError(f"reweight.hypergrad must be one of {', '.join(known)}, got '{chosen}'")
    reason = classes(registry)[choose(cfg, None, registry)[0]].refuses(cfg)
    if reason:
        raise TapweightError(reason)


def build(cfg, device: torch.device | None = None, registry: Registry | None = None) -> Hypergradient:
    """The run's hypergradient on ``device``: its estimator (``auto`` chosen, the reason kept
    as ``reason``) and ``reweight.scale``."""
    name, reason = choose(cfg, device, registry)
    estimator = classes(registry)[name](cfg)
    estimator.name = name
    return Hypergradient(estimator, cfg.reweight.scale, reason)
