"""What every weighting is: the interface the engine calls, and what it hands over.

A weighting (``--method NAME``) decides the objective weights λ = softmax(α) once per
global step. It declares what it reads, so that the engine computes nothing more:

- ``pretrains``: False for ``none`` (no continued pretraining at all);
- ``learns``: levels II and III run (w is fine-tuned, the validation gradient u = ∇_w L_val(w')
  is taken); without it only level I runs;
- ``hypergradient``: the engine's estimate of dL_val/dλ (``reweight.hypergrad``, method/hypergrad.py);
- ``gradients``: ``"backbone"`` or ``"last"``: each objective's own gradient ∇L_k on θ's
  backbone (or on its last weight tensor only, GradNorm's "last shared layer"), K extra
  backward passes through level I's graph (method/weightings/gradients.py).

At the end of each global step the engine hands a `Signal` to `Weighting.update`,
which returns the new logits α, for every rule alike (`Weighting.update` has the worked
example); a rule that steps α with level III's optimizer gets them from
``signal.reweight.step`` (`AlphaOptimizer`). A rule that keeps state beyond α (an
accumulator, a running scale, initial losses) returns it from ``state_dict`` and takes it back
in ``load_state_dict``: the checkpoint holds it, so a resumed run is the uninterrupted one.

This module imports no torch (plugins register weightings at start-up); the rules do.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tapweight.errors import TapweightError

if TYPE_CHECKING:
    import torch

#: ``gradients`` a weighting may ask for
GRADIENTS = (None, "backbone", "last")


@dataclass
class Signal:
    """What a global step leaves for the weighting (tensors float64 on the CPU, shape (K,)).

    ``step`` counts the global steps before this one (0 at the first); ``lam`` is the λ level I
    trained with; ``losses`` are the objectives' unweighted losses L_k(θ) on the step's (last)
    level I batch; ``eta_pretrain`` is the rate of that level I step. ``skipped``: GradScaler
    skipped a level I/II step (fp16 inf/NaN), L_val does not depend on this step's λ, the
    engine calls no update.

    With ``hypergradient``: ``hypergrad`` = dL_val/dλ (K). For unroll 1 and SGD it is
    −2γ·η₁η₂·⟨∇_θ L_k(θ), u_b⟩ (``reweight.scale=exact``; without η₁η₂ under the default
    ``reference`` scale), so its sign is minus that of the alignment of objective k with w's
    validation gradient.

    With ``gradients``: ``grad_norms`` = ‖∇L_k‖ over the chosen parameters, and, when the rule
    also ``learns``, ``dots`` = ⟨∇L_k, u_b⟩ over them (u_b: u on w's backbone, at the same
    parameters) and ``u_norm`` = ‖u_b‖ there.

    ``alpha``: the logits α now (K, float64, CPU; λ = softmax(α)); ``reweight``: α with level
    III's optimizer and scheduler (``reweight.*``), for the rules that step α with them
    (TapWeight, OL-AUX).
    """

    step: int
    lam: torch.Tensor
    losses: torch.Tensor
    alpha: torch.Tensor
    reweight: AlphaOptimizer | None = None
    eta_pretrain: float = 0.0
    skipped: bool = False
    hypergrad: torch.Tensor | None = None
    dots: torch.Tensor | None = None
    grad_norms: torch.Tensor | None = None
    u_norm: float | None = None

    @property
    def cosines(self) -> torch.Tensor:
        """cos(∇L_k, u_b) = ⟨∇L_k, u_b⟩ / (‖∇L_k‖‖u_b‖); 0 where a gradient is zero."""
        if self.dots is None:
            raise TapweightError("this weighting reads cosines: declare gradients='backbone' and learns=True")
        scale = self.grad_norms * self.u_norm
        return self.dots / scale.clamp_min(1e-300) * (scale > 0)

    def record(self, names: Sequence[str]) -> dict[str, float]:
        """The step record's columns of what was computed: ``hypergrad_<k>``, ``cosine_<k>``,
        ``grad_norm_<k>`` (losses.csv, the trackers)."""
        out = {}
        if self.hypergrad is not None:
            out.update({f"hypergrad_{n}": float(g) for n, g in zip(names, self.hypergrad)})
        if self.dots is not None:
            out.update({f"cosine_{n}": float(c) for n, c in zip(names, self.cosines)})
        if self.grad_norms is not None:
            out.update({f"grad_norm_{n}": float(g) for n, g in zip(names, self.grad_norms)})
        return out


class AlphaOptimizer:
    """α with level III's optimizer and scheduler (``reweight.optimizer``, ``lr``, ``scheduler``),
    for the rules whose step of α is that optimizer's (TapWeight: SGD at rate 200, StepLR(100, 0.9))."""

    def __init__(self, alpha: torch.nn.Parameter, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler):
        self.alpha, self.optimizer, self.scheduler = alpha, optimizer, scheduler

    def step(self, lam: torch.Tensor, g_lam: torch.Tensor) -> torch.Tensor:
        """One step of the optimizer on α from dL/dλ = ``g_lam`` at λ = ``lam``, through the
        softmax (∂L/∂α = λ ⊙ (g − ⟨λ, g⟩)); returns the new logits (float64, CPU)."""
        from tapweight.method.hypergrad import softmax_vjp

        self.optimizer.zero_grad(set_to_none=True)
        self.alpha.grad = softmax_vjp(lam, g_lam.double()).float().to(self.alpha.device)
        self.optimizer.step()
        return self.alpha.detach().double().cpu()

    def schedule(self) -> None:
        """Advance the rate's schedule by one global step."""
        self.scheduler.step()


class Weighting:
    """A rule that sets λ once per global step. Subclass it, set the class attributes the rule
    needs, and override `update` (and the state methods if it keeps state).

    ``Options`` is a dataclass of the rule's settings, read from ``--set weighting.NAME.<option>=...``
    (``self.options``; each method reads its own, so one ``tapweight compare`` can set several);
    ``argument`` is what follows ``NAME:`` in ``--method NAME:ARG``.
    """

    pretrains = True
    learns = False
    hypergradient = False
    gradients: str | None = None

    @dataclass
    class Options:
        pass

    def __init__(self, cfg: Any, argument: str = ""):
        self.cfg, self.argument = cfg, argument
        name = cfg.method.split(":", 1)[0]
        self.options = parse_options(self.Options, dict((cfg.weighting or {}).get(name) or {}), name)
        self.start: Sequence[float] | None = None  # λ₀, None: uniform
        if self.gradients not in GRADIENTS:
            raise TapweightError(f"method '{cfg.method}': gradients must be one of {GRADIENTS}, "
                                 f"got {self.gradients!r}")

    def start_logits(self, names: Sequence[str]) -> torch.Tensor:
        """α at step 0: log λ₀ (float64), λ₀ = `initial` normalised (uniform when None)."""
        import torch

        start = self.initial(names)
        lam = torch.full((len(names),), 1.0 / len(names)) if start is None else torch.tensor(start)
        return logits(lam.double() / lam.sum())

    def objectives(self, wanted: list[str]) -> list[str]:
        """The objectives to train on, from the run's (``objectives`` or the domain's)."""
        return wanted

    def initial(self, names: Sequence[str]) -> Sequence[float] | None:
        """λ at step 0 for the objectives ``names`` (None: 1/K each)."""
        return self.start

    def update(self, signal: Signal) -> torch.Tensor:
        """The new logits α ∈ R^K (λ = softmax(α)) after the global step ``signal`` describes.

        The same contract for every rule: read what the class declares (``signal.hypergrad``,
        ``signal.cosines``...), return the logits; to keep them, return ``signal.alpha``. The
        engine copies them into α; it does not call ``update`` for a step GradScaler skipped.
        A rule whose step is level III's optimizer's takes the logits from
        ``signal.reweight.step(signal.lam, g)``. For example, with K = 2 objectives at
        λ = (0.5, 0.5), α = (0, 0), a rule that moves α against the hypergradient at rate 2::

            def update(self, signal):
                return signal.alpha - 2.0 * signal.hypergrad   # g = (0.1, −0.1): α = (−0.2, 0.2)

        gives λ = softmax(−0.2, 0.2) = (0.40, 0.60) for the next step. Static weights keep α.
        """
        return signal.alpha

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def parse_options(options: type, values: dict, method: str) -> Any:
    """``values`` (``cfg.weighting[method]``) as an instance of the dataclass ``options``; an unknown
    key or a value of the wrong type is a one-line error."""
    known = {f.name: f for f in dataclasses.fields(options)}
    out = {}
    for key, value in values.items():
        if key not in known:
            names = ", ".join(sorted(known)) or "none"
            raise TapweightError(f"method '{method}' has no option weighting.{method}.{key} (its options: {names})")
        kind = type(known[key].default)
        if kind is bool and not isinstance(value, bool) or kind in (int, float) and (
                isinstance(value, bool) or not isinstance(value, (int, float))
                or kind is int and not float(value).is_integer()):
            raise TapweightError(f"weighting.{method}.{key} takes a {kind.__name__}, got {value!r}")
        if kind is float and not math.isfinite(value):
            raise TapweightError(f"weighting.{method}.{key} must be a finite number, got {value}")
        out[key] = kind(value)
    return options(**out)


def logits(lam: torch.Tensor) -> torch.Tensor:
    """α with softmax(α) = λ; a zero weight gets a large negative logit (λ ≈ 1e-12), so that
    ``fixed`` and the gating rules can switch an objective off."""
    import torch

    return torch.log(lam.double().clamp_min(1e-12))


def check(ok: bool, message: str) -> None:
    """A rule's option check: raise ``message`` as a one-line error unless ``ok``."""
    if not ok:
        raise TapweightError(message)
