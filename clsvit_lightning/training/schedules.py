"""Per-step schedules, precomputed as arrays indexed by the global step (DINOv2's layout).

Indexing an array makes resume trivial (the step is the state) and every value loggable.
"""

from __future__ import annotations

import math

import numpy as np


def cosine_schedule(
    base_value: float,
    final_value: float,
    total_steps: int,
    warmup_steps: int = 0,
    start_warmup_value: float = 0.0,
    freeze_steps: int = 0,
) -> np.ndarray:
    """``freeze_steps`` zeros, a linear warmup to ``base_value``, then a half cosine to ``final_value``.

    The warmup's ``W`` steps go from ``start_warmup_value`` to ``base_value`` both included (DINOv2's
    ``CosineScheduler``: ``np.linspace``). For step ``i`` of the cosine part of length ``C``:
    ``final + (base - final) * (1 + cos(pi * i / C)) / 2``.
    """
    for name, value in (("total_steps", total_steps), ("warmup_steps", warmup_steps), ("freeze_steps", freeze_steps)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if freeze_steps + warmup_steps > total_steps:
        raise ValueError(
            f"freeze ({freeze_steps}) + warmup ({warmup_steps}) steps exceed the {total_steps} total steps"
        )
    freeze = np.zeros(freeze_steps)
    warmup = np.linspace(start_warmup_value, base_value, warmup_steps)
    cosine_steps = total_steps - freeze_steps - warmup_steps
    steps = np.arange(cosine_steps)
    cosine = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(math.pi * steps / max(cosine_steps, 1)))
    return np.concatenate([freeze, warmup, cosine]).astype(np.float64)


def warmup_poly_schedule(
    total_steps: int, warmup_steps: int = 0, warmup_ratio: float = 1e-6, power: float = 1.0
) -> np.ndarray:
    """The lr multiplier ``[T]`` of mmseg's ``poly`` with linear warmup (1.0 = the base lr).

    The DINOv2 linear-probe protocol for dense tasks: for step ``t`` of ``T``,
    ``(1 - t / T) ** power`` (``power = 1``: linear decay to 0), multiplied during the first ``W``
    warmup steps by ``1 - (1 - t / W) * (1 - warmup_ratio)`` (from ``warmup_ratio`` up to 1).
    """
    if total_steps < 1:
        raise ValueError(f"the lr schedule needs total_steps >= 1, got {total_steps} (set trainer.max_steps)")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must be in 0..{total_steps} (the total steps), got {warmup_steps}")
    steps = np.arange(total_steps, dtype=np.float64)
    multiplier = (1.0 - steps / total_steps) ** power
    if warmup_steps:
        warm = steps[:warmup_steps]
        multiplier[:warmup_steps] *= 1.0 - (1.0 - warm / warmup_steps) * (1.0 - warmup_ratio)
    return multiplier


def linear_warmup_then_constant(start_value: float, value: float, warmup_steps: int, total_steps: int) -> np.ndarray:
    """Linear from ``start_value`` to ``value`` (both included) over ``warmup_steps``, then ``value``.

    DINOv2's teacher temperature. A warmup longer than the run is cut at ``total_steps``.
    """
    warmup = np.linspace(start_value, value, warmup_steps)[:total_steps]
    return np.concatenate([warmup, np.full(total_steps - len(warmup), value)])


def scaled_learning_rate(base_lr: float, total_batch_size: int, rule: str = "sqrt_wrt_1024") -> float:
    """DINOv2's scaling rule: ``base_lr * sqrt(batch / 1024)`` (``linear_wrt_256``: ``* batch / 256``)."""
    if rule == "sqrt_wrt_1024":
        return base_lr * math.sqrt(total_batch_size / 1024)
    if rule == "linear_wrt_256":
        return base_lr * total_batch_size / 256
    if rule == "none":
        return base_lr
    raise ValueError(f"unknown lr scaling rule {rule!r}; expected 'sqrt_wrt_1024', 'linear_wrt_256' or 'none'")


def value_at(schedule: np.ndarray, step: int) -> float:
    """The schedule's value at ``step``; past the end, its last value."""
    return float(schedule[min(step, len(schedule) - 1)])
