"""Flow-matching Euler samplers with classifier-free guidance, guidance interval and rescale.

Spec generator.md §4. The schedule is built in float64 (numpy) as upstream does; in float32 the
t = 0.6 step would fall out of the shape stage's guidance interval. Samplers are model-agnostic:
``model(x, t_times_1000, cond) -> v`` on a plain tensor ``x``; sparse latents pass ``batch``
(the sample index of each row) so guidance rescale uses the per-sample population std.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from ..errors import InputError

ModelFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
#: called after every Euler step with (step index 1-based, total steps); may raise Cancelled
StepCallback = Callable[[int, int], None]


def schedule(steps: int, rescale_t: float) -> list[tuple[float, float]]:
    """(t, t_prev) pairs: linspace(1, 0) warped by t' = r t / (1 + (r - 1) t), float64."""
    t = np.linspace(1, 0, steps + 1)
    t = rescale_t * t / (1 + (rescale_t - 1) * t)
    seq = t.tolist()
    return [(seq[i], seq[i + 1]) for i in range(steps)]


def _std_dense(x: torch.Tensor) -> torch.Tensor:
    """Unbiased std over all non-batch dims (dense SS latent), keepdim."""
    return x.std(dim=list(range(1, x.ndim)), keepdim=True)


def _std_sparse(x: torch.Tensor, batch: torch.Tensor, nb: int) -> torch.Tensor:
    """Per-sample population std sqrt(E[x²] - E[x]²) over rows × channels, one row per token."""
    count = torch.bincount(batch, minlength=nb).to(x.dtype) * x.shape[1]
    s1 = torch.zeros(nb, dtype=x.dtype, device=x.device).index_add_(0, batch, x.sum(1))
    s2 = torch.zeros(nb, dtype=x.dtype, device=x.device).index_add_(0, batch, (x * x).sum(1))
    mean = s1 / count
    return (s2 / count - mean * mean).clamp_min(0).sqrt()[batch][:, None]


@dataclass
class SampleResult:
    samples: torch.Tensor
    #: filled only with ``trajectory=True``: x after each step and the x0 prediction of each step
    pred_x_t: list[torch.Tensor] = field(default_factory=list)
    pred_x_0: list[torch.Tensor] = field(default_factory=list)
    t_pairs: list[tuple[float, float]] = field(default_factory=list)


class FlowEulerSampler:
    """Plain Euler on the rectified-flow ODE, x_t = (1 - t) x0 + (σ + (1 - σ) t) ε, model predicts v."""

    def __init__(self, sigma_min: float = 1e-5) -> None:
        self.sigma_min = sigma_min

    def _x0(self, x_t: torch.Tensor, t: float, v: torch.Tensor) -> torch.Tensor:
        return (1 - self.sigma_min) * x_t - (self.sigma_min + (1 - self.sigma_min) * t) * v

    def _v(self, x_t: torch.Tensor, t: float, x0: torch.Tensor) -> torch.Tensor:
        return ((1 - self.sigma_min) * x_t - x0) / (self.sigma_min + (1 - self.sigma_min) * t)

    def _call(self, model: ModelFn, x: torch.Tensor, t: float, cond: Any, nb: int) -> torch.Tensor:
        return model(x, torch.tensor([1000 * t] * nb, device=x.device, dtype=torch.float32), cond)

    def _predict(self, model: ModelFn, x: torch.Tensor, t: float, cond: Any, nb: int,
                 batch: torch.Tensor | None, **params: Any) -> torch.Tensor:
        return self._call(model, x, t, cond, nb)

    def sample(self, model: ModelFn, noise: torch.Tensor, cond: Any, *, steps: int = 50, rescale_t: float = 1.0,
               batch: torch.Tensor | None = None, num_samples: int | None = None,
               on_step: StepCallback | None = None, trajectory: bool = False, **params: Any) -> SampleResult:
        """Integrate from t = 1 (noise) to 0. ``batch`` marks sparse rows; ``on_step`` may raise Cancelled."""
        if steps < 1:
            raise InputError(f"sampler steps must be at least 1, got {steps}")
        if rescale_t <= 0:
            raise InputError(f"rescale_t must be positive, got {rescale_t}")
        nb = num_samples or (int(batch.max()) + 1 if batch is not None and len(batch) else noise.shape[0])
        x = noise
        res = SampleResult(noise, t_pairs=schedule(steps, rescale_t))
        for i, (t, t_prev) in enumerate(res.t_pairs):
            v = self._predict(model, x, t, cond, nb, batch, **params)
            if trajectory:
                res.pred_x_0.append(self._x0(x, t, v))
            x = x - (t - t_prev) * v
            if trajectory:
                res.pred_x_t.append(x)
            if on_step is not None:
                on_step(i + 1, steps)
        res.samples = x
        return res


class FlowEulerGuidanceIntervalSampler(FlowEulerSampler):
    """CFG w·pos + (1 - w)·neg only for lo ≤ t ≤ hi, then optional std rescale in x0 space (§4.3)."""

    def _predict(self, model: ModelFn, x: torch.Tensor, t: float, cond: Any, nb: int,
                 batch: torch.Tensor | None, *, neg_cond: Any = None, guidance_strength: float = 3.0,
                 guidance_interval: tuple[float, float] = (0.0, 1.0), guidance_rescale: float = 0.0,
                 **unused: Any) -> torch.Tensor:
        if unused:
            raise InputError(f"unknown sampler parameter(s): {', '.join(sorted(unused))}")
        lo, hi = guidance_interval
        w = guidance_strength if lo <= t <= hi else 1.0
        if w == 1:
            return self._call(model, x, t, cond, nb)
        if neg_cond is None:
            raise InputError("classifier-free guidance needs neg_cond")
        if w == 0:
            return self._call(model, x, t, neg_cond, nb)
        v_pos = self._call(model, x, t, cond, nb)
        v_neg = self._call(model, x, t, neg_cond, nb)
        v = w * v_pos + (1 - w) * v_neg
        if guidance_rescale > 0:
            x0_pos, x0_cfg = self._x0(x, t, v_pos), self._x0(x, t, v)
            if batch is None:
                s_pos, s_cfg = _std_dense(x0_pos), _std_dense(x0_cfg)
            else:
                s_pos, s_cfg = _std_sparse(x0_pos, batch, nb), _std_sparse(x0_cfg, batch, nb)
            x0 = guidance_rescale * (x0_cfg * (s_pos / s_cfg)) + (1 - guidance_rescale) * x0_cfg
            v = self._v(x, t, x0)
        return v


class FlowEulerCfgSampler(FlowEulerGuidanceIntervalSampler):
    """CFG on every step (no interval)."""

    def _predict(self, model, x, t, cond, nb, batch, **params):  # type: ignore[override]
        params["guidance_interval"] = (float("-inf"), float("inf"))
        return super()._predict(model, x, t, cond, nb, batch, **params)


SAMPLERS = {
    "FlowEulerSampler": FlowEulerSampler,
    "FlowEulerCfgSampler": FlowEulerCfgSampler,
    "FlowEulerGuidanceIntervalSampler": FlowEulerGuidanceIntervalSampler,
}


def make_sampler(name: str, args: dict[str, Any]) -> FlowEulerSampler:
    if name not in SAMPLERS:
        raise InputError(f"unknown sampler {name!r}; expected one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name](**args)
