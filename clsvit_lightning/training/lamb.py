"""The LAMB optimizer (torch ships none); DeiT III trains with it."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al. 2020), as apex's ``FusedLAMB`` that DeiT III trains with (torch has none).

    Per parameter ``w`` with gradient ``g`` at step ``t`` (Adam moments with bias correction)::

        m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
        u = (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) + wd * w
        w = w - lr * r * u,   r = ||w|| / ||u||   (1 if either norm is 0)

    As in apex (``use_nvlamb=False``) and timm, the trust ratio ``r`` applies only where ``wd != 0``:
    norms, biases and LayerScales take plain Adam steps. Apex also clips the global gradient norm
    to 1.0 inside the step; here that is the task's ``clip_grad``.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
    ) -> None:
        if lr < 0 or eps <= 0 or weight_decay < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(
                f"Lamb: need lr >= 0, eps > 0, weight_decay >= 0, betas in [0, 1); got {lr}, {eps}, "
                f"{weight_decay}, {betas}"
            )
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            weight_decay = group["weight_decay"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                state["step"] += 1
                grad, exp_avg, exp_avg_sq = param.grad, state["exp_avg"], state["exp_avg_sq"]
                exp_avg.lerp_(grad, 1.0 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                denominator = (exp_avg_sq / (1.0 - beta2 ** state["step"])).sqrt_().add_(group["eps"])
                update = (exp_avg / (1.0 - beta1 ** state["step"])).div_(denominator)
                if weight_decay != 0:
                    update.add_(param, alpha=weight_decay)
                    weight_norm, update_norm = param.norm(), update.norm()
                    trust_ratio = torch.where(
                        (weight_norm > 0) & (update_norm > 0), weight_norm / update_norm, torch.ones_like(weight_norm)
                    )
                    update.mul_(trust_ratio)
                param.add_(update, alpha=-group["lr"])
        return loss
