"""Teacher targets: turn teacher logits into the probability distributions the student is trained on.

Two ways, both from the DINO family, both keeping the teacher from collapsing onto one prototype:

* ``sinkhorn_knopp``: SwAV's equipartition (Caron et al. 2020, "Unsupervised Learning of Visual
  Features by Contrasting Cluster Assignments"), as DINOv2 (Oquab et al. 2023) uses it for both the
  DINO and the iBOT targets. Stateless.
* ``CenteringTargets``: DINO's centering (Caron et al. 2021): subtract an EMA of the batch mean of
  the logits, then a sharp softmax. Stateful (the center is a checkpointed buffer).

Targets carry no gradient. Everything that sums over samples is all-reduced when
``torch.distributed`` is initialised, so ranks holding parts of a batch get the targets one process
would compute on the whole batch.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

TeacherTargetMethod = Literal["sinkhorn_knopp", "centering"]


def _is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _all_reduce_sum(tensor: Tensor) -> Tensor:
    """In-place sum across ranks; the identity on a single process."""
    if _is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def _all_reduce_max(tensor: Tensor) -> Tensor:
    """In-place max across ranks; the identity on a single process."""
    if _is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def _compute_dtype(tensor: Tensor) -> torch.dtype:
    return torch.promote_types(tensor.dtype, torch.float32)  # float32 for half inputs, float64 kept


@torch.no_grad()
def sinkhorn_knopp(
    teacher_logits: Tensor,
    temperature: float,
    iterations: int = 3,
    num_samples: Tensor | int | None = None,
) -> Tensor:
    """``[B, K]`` targets whose rows are distributions and whose prototypes are used equally.

    Sinkhorn-Knopp on ``Q = exp(teacher_logits / temperature)``, seen as a ``[K, B]`` joint over
    (prototype, sample) as in SwAV / DINOv2::

        Q /= Q.sum()                                      # a joint distribution
        repeat `iterations` times:
            Q /= Q.sum(dim=1, keepdim=True) * K           # each prototype's marginal is 1/K
            Q /= Q.sum(dim=0, keepdim=True) * B           # each sample's marginal is 1/B
        return (Q * B).T                                  # per sample: a distribution over prototypes

    ``B`` is the *global* number of samples: ``num_samples`` if given (iBOT passes the all-reduced
    number of masked patches, which can differ across ranks), else the local row count times the
    world size (equal local batches). Sums over samples (the total and the per-prototype sums) are
    all-reduced across ranks; the per-sample sums are local.

    DINOv2 exponentiates directly; here the global max of ``teacher_logits / temperature`` is
    subtracted first. A constant factor on ``Q`` cancels in the first normalisation, so the result is
    the same, without overflow for large logits or small temperatures. Like DINOv2's, the iterations
    run on ``Q`` itself, not in the log domain: a prototype whose every entry underflows (logits more
    than ~85 x temperature below the global max) gives NaN. The DINO head's logits are cosines times
    ``weight_g``, far inside that range.

    On one process ``B`` only rescales intermediate values (the row step removes any global factor);
    across ranks it sets how much each rank's samples weigh, so every rank must pass the same global
    count.
    """
    if teacher_logits.ndim != 2:
        raise ValueError(f"expected teacher_logits [B, K], got {tuple(teacher_logits.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    local_samples, num_prototypes = teacher_logits.shape
    if num_samples is None:
        world_size = dist.get_world_size() if _is_distributed() else 1
        num_samples = local_samples * world_size
    compute_dtype = _compute_dtype(teacher_logits)
    num_samples = torch.as_tensor(num_samples, dtype=compute_dtype, device=teacher_logits.device)

    scaled_logits = teacher_logits.to(compute_dtype) / temperature  # [B_local, K]
    # The max over an empty local batch (a rank without masked patches) is -inf: it loses the MAX.
    local_max = scaled_logits.amax() if scaled_logits.numel() > 0 else scaled_logits.new_tensor(float("-inf"))
    global_max = _all_reduce_max(local_max.clone())
    global_max = torch.where(torch.isfinite(global_max), global_max, torch.zeros_like(global_max))
    joint = torch.exp(scaled_logits - global_max).T  # [K, B_local]

    joint /= _all_reduce_sum(joint.sum())
    for _ in range(iterations):
        prototype_marginal = _all_reduce_sum(joint.sum(dim=1, keepdim=True))  # [K, 1], summed over all samples
        joint /= prototype_marginal * num_prototypes
        sample_marginal = joint.sum(dim=0, keepdim=True)  # [1, B_local], each sample lives on one rank
        joint /= sample_marginal * num_samples
    # Each column sums to 1/B: scaling by B turns the joint into per-sample distributions.
    return (joint * num_samples).T.contiguous()  # [B_local, K]


class CenteringTargets(nn.Module):
    """DINO's centering: ``softmax((teacher_logits - center) / temperature)``, center an EMA of batch means.

    After computing the targets of a batch, the center moves towards that batch's mean logits::

        center = momentum * center + (1 - momentum) * mean_over_global_batch(teacher_logits)

    so a batch is centred with the center accumulated from the previous batches (DINOv2 applies its
    asynchronously all-reduced update at the next call; this is the same, computed synchronously).
    The batch mean is the all-reduced sum over the all-reduced count, so ranks may hold different
    numbers of rows (iBOT's masked patches). DINO and iBOT each keep their own instance.
    """

    center: Tensor

    def __init__(self, num_prototypes: int, momentum: float = 0.9) -> None:
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.num_prototypes = num_prototypes
        self.momentum = momentum
        self.register_buffer("center", torch.zeros(1, num_prototypes))  # [1, K], persistent: checkpointed

    @torch.no_grad()
    def forward(self, teacher_logits: Tensor, temperature: float) -> Tensor:  # [B, K] -> [B, K]
        self._check_logits(teacher_logits)
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        compute_dtype = _compute_dtype(teacher_logits)
        centered = teacher_logits.to(compute_dtype) - self.center.to(compute_dtype)  # [B, K]
        probs = F.softmax(centered / temperature, dim=-1)
        self.update_center(teacher_logits)  # after use: this batch is centred with the previous center
        return probs

    @torch.no_grad()
    def update_center(self, teacher_logits: Tensor) -> None:
        """EMA step of the center towards the global batch mean of ``teacher_logits`` ``[B, K]``."""
        self._check_logits(teacher_logits)
        compute_dtype = _compute_dtype(teacher_logits)
        batch_sum = teacher_logits.to(compute_dtype).sum(dim=0, keepdim=True)  # [1, K]
        count = torch.tensor(float(teacher_logits.shape[0]), dtype=compute_dtype, device=teacher_logits.device)
        if _is_distributed():
            # One all-reduce for both: the sum and the count are packed side by side.
            packed = _all_reduce_sum(torch.cat([batch_sum, count.view(1, 1)], dim=1))  # [1, K + 1]
            batch_sum, count = packed[:, :-1], packed[0, -1]
        batch_mean = batch_sum / count.clamp(min=1.0)  # [1, K]
        # A global batch without rows (no masked patch anywhere) leaves the center unchanged,
        # decided without a host sync.
        momentum = torch.where(count > 0, count.new_tensor(self.momentum), count.new_tensor(1.0))
        new_center = momentum * self.center.to(compute_dtype) + (1.0 - momentum) * batch_mean
        self.center.copy_(new_center)

    def _check_logits(self, teacher_logits: Tensor) -> None:
        if teacher_logits.ndim != 2 or teacher_logits.shape[1] != self.num_prototypes:
            raise ValueError(f"expected teacher_logits [B, {self.num_prototypes}], got {tuple(teacher_logits.shape)}")

    def extra_repr(self) -> str:
        return f"num_prototypes={self.num_prototypes}, momentum={self.momentum}"


def teacher_probabilities(
    teacher_logits: Tensor,
    temperature: float,
    method: TeacherTargetMethod,
    centering: CenteringTargets | None = None,
    num_samples: Tensor | int | None = None,
    sinkhorn_iterations: int = 3,
) -> Tensor:
    """``[B, K]`` teacher targets by ``method``.

    ``"sinkhorn_knopp"`` uses ``num_samples`` and ``sinkhorn_iterations`` (``centering`` is unused);
    ``"centering"`` needs ``centering``, whose center it updates (``num_samples`` is unused: the
    global count is all-reduced).
    """
    if method == "sinkhorn_knopp":
        return sinkhorn_knopp(teacher_logits, temperature, iterations=sinkhorn_iterations, num_samples=num_samples)
    if method == "centering":
        if centering is None:
            raise ValueError('method="centering" needs a CenteringTargets module (centering=...)')
        return centering(teacher_logits, temperature)
    raise ValueError(f'unknown teacher target method {method!r}: expected "sinkhorn_knopp" or "centering"')
