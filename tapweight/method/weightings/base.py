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
which returns the new logits α (or None to keep them). A rule that keeps state beyond α (an
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

    ``alpha``, ``optimizer``, ``scheduler``: the logits and level III's optimizer and scheduler
    (``reweight.*``), for the rules that step α with them (TapWeight).
    """

    step: int
    lam: torch.Tensor
    losses: torch.Tensor
    eta_pretrain: float = 0.0
    skipped: bool = False
    hypergrad: torch.Tensor | None = None
    dots: torch.Tensor | None = None
    grad_norms: torch.Tensor | None = None
    u_norm: float | None = None
    alpha: Any = None
    optimizer: Any = None
    scheduler: Any = None

    @classmethod
    def of(cls, engine: Any, skipped: bool = False, u: list | None = None) -> Signal:
        """The signal of ``engine``'s current global step: what its level I left (λ, losses,
        rate, the objectives' gradients), and from w's validation gradient ``u`` (level III;
        None: the method does not learn) the dots with u_b. A skipped step's hypergradient is 0."""
        weighting, gradients = engine.weighting, engine.gradients
        signal = cls(step=engine.step_count, lam=engine.lam.cpu(), losses=engine._losses.double().cpu(),
                     eta_pretrain=engine._eta_pretrain, skipped=skipped,
                     grad_norms=gradients.norms() if gradients else None,
                     alpha=engine.alpha, optimizer=engine.opt_reweight, scheduler=engine.sched_reweight)
        if skipped and weighting.hypergradient:
            signal.hypergrad = signal.lam.new_zeros(len(signal.lam))
        if gradients and u is not None:
            signal.dots, signal.u_norm = gradients.dots(u)
        return signal

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

    def apply(self, signal: Signal) -> Signal:
        """`update` from ``signal`` (not when GradScaler skipped a step), its logits
        copied into ``signal.alpha``; returns ``signal``."""
        import torch

        if not signal.skipped:
            alpha = self.update(signal)
            if alpha is not None:
                with torch.no_grad():
                    signal.alpha.copy_(alpha.to(signal.alpha))
        return signal

    def objectives(self, wanted: list[str]) -> list[str]:
        """The objectives to train on, from the run's (``objectives`` or the domain's)."""
        return wanted

    def initial(self, names: Sequence[str]) -> Sequence[float] | None:
        """λ at step 0 for the objectives ``names`` (None: 1/K each)."""
        return self.start

    def update(self, signal: Signal) -> torch.Tensor | None:
        """The new logits α (K), or None to keep them. Static weights keep them."""
        return None

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
