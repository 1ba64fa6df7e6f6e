"""DINOLoss: the average over (student crop, teacher view) pairs, same-view global pairs excluded."""

import math

import pytest
import torch
import torch.nn.functional as F

from clsvit_lightning.losses import DINOLoss


def random_inputs(num_student_crops, num_teacher_views, batch_size=3, num_prototypes=7, dtype=torch.float64):
    student_logits = torch.randn(num_student_crops, batch_size, num_prototypes, dtype=dtype)  # [S, B, K]
    teacher_probs = torch.randn(num_teacher_views, batch_size, num_prototypes, dtype=dtype).softmax(-1)  # [T, B, K]
    return student_logits, teacher_probs


def naive_dino_loss(student_logits, teacher_probs, student_temperature):
    """Explicit double loop over pairs, then over samples and prototypes."""
    num_student_crops, batch_size, num_prototypes = student_logits.shape
    num_teacher_views = teacher_probs.shape[0]
    pair_losses = []
    for s in range(num_student_crops):
        for t in range(num_teacher_views):
            if s == t:  # a global crop against its own teacher view
                continue
            sample_losses = []
            for b in range(batch_size):
                scaled = [student_logits[s, b, k].item() / student_temperature for k in range(num_prototypes)]
                log_normalizer = math.log(sum(math.exp(v) for v in scaled))
                sample_losses.append(
                    -sum(teacher_probs[t, b, k].item() * (scaled[k] - log_normalizer) for k in range(num_prototypes))
                )
            pair_losses.append(sum(sample_losses) / batch_size)
    return sum(pair_losses) / len(pair_losses), len(pair_losses)


@pytest.mark.parametrize(("num_student_crops", "num_teacher_views"), [(10, 2), (2, 2), (5, 1), (4, 3)])
@pytest.mark.parametrize("student_temperature", [0.1, 0.5])
def test_matches_naive_double_loop(num_student_crops, num_teacher_views, student_temperature):
    student_logits, teacher_probs = random_inputs(num_student_crops, num_teacher_views)
    expected, num_pairs = naive_dino_loss(student_logits, teacher_probs, student_temperature)
    loss = DINOLoss(student_temperature)(student_logits, teacher_probs)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    assert DINOLoss.pair_count(num_student_crops, num_teacher_views) == num_pairs


def test_pair_count_is_dinov2_weighting():
    assert DINOLoss.pair_count(2 + 8, 2) == 18
    assert DINOLoss.pair_count(2, 2) == 2
    weights = DINOLoss.pair_weights(10, 2)  # [S, T]
    assert weights.shape == (10, 2)
    assert torch.equal(weights.diagonal(), torch.zeros(2))
    assert torch.equal(weights[2:], torch.full((8, 2), 1 / 18))
    assert weights[0, 1] == weights[1, 0] == 1 / 18


def test_equals_dinov2_local_plus_swapped_global_terms():
    """DINOv2's bookkeeping: (16 local pairs + 2 x mean of the 2 cross-view global terms) / 18."""
    batch_size = 4
    student_logits, teacher_probs = random_inputs(10, 2, batch_size=batch_size)
    log_probs = F.log_softmax(student_logits / 0.1, dim=-1)  # [S, B, K]

    def batch_mean_cross_entropy(student_log_probs, targets):
        return -(targets * student_log_probs).sum(-1).mean()

    local_sum = sum(batch_mean_cross_entropy(log_probs[s], teacher_probs[t]) for s in range(2, 10) for t in range(2))
    swapped_teacher = torch.cat([teacher_probs[1], teacher_probs[0]])  # [2B, K]: view B then view A
    global_mean = batch_mean_cross_entropy(log_probs[:2].flatten(0, 1), swapped_teacher)
    loss_scales = 2
    dinov2_total = local_sum / 18 + global_mean * loss_scales / 18
    assert DINOLoss()(student_logits, teacher_probs).item() == pytest.approx(dinov2_total.item(), rel=1e-12)


def test_same_view_pairs_are_truly_excluded():
    student_logits, teacher_probs = random_inputs(10, 2)
    other_teacher_probs = teacher_probs.clone()
    other_teacher_probs[0] = torch.randn_like(teacher_probs[0]).softmax(-1)  # change teacher view 0 only
    loss_fn = DINOLoss()

    def gradient_of_student_crop(crop, targets):
        logits = student_logits.clone().requires_grad_(True)
        loss_fn(logits, targets).backward()
        return logits.grad[crop]

    # Student crop 0 (global view 0) only meets teacher view 1: its term does not see view 0 ...
    assert torch.allclose(gradient_of_student_crop(0, teacher_probs), gradient_of_student_crop(0, other_teacher_probs))
    # ... while student crop 1 (global view 1) and a local crop do.
    for crop in (1, 2):
        assert not torch.allclose(
            gradient_of_student_crop(crop, teacher_probs), gradient_of_student_crop(crop, other_teacher_probs)
        )
    # The loss changes by exactly the change of the 9 pairs with teacher view 0 and s != 0, over 18.
    pair_change = loss_fn.pair_cross_entropy(student_logits, other_teacher_probs) - loss_fn.pair_cross_entropy(
        student_logits, teacher_probs
    )  # [S, T], nonzero in column 0 only
    loss_change = loss_fn(student_logits, other_teacher_probs) - loss_fn(student_logits, teacher_probs)
    assert loss_change.item() == pytest.approx(pair_change[1:, 0].sum().item() / 18, rel=1e-10)
    assert pair_change[0, 0] != 0  # the excluded pair did change: the exclusion is what hides it


def test_pair_cross_entropy_weighted_by_pair_weights_is_the_loss():
    student_logits, teacher_probs = random_inputs(6, 2)
    loss_fn = DINOLoss()
    pair_cross_entropy = loss_fn.pair_cross_entropy(student_logits, teacher_probs)  # [S, T]
    weighted = (DINOLoss.pair_weights(6, 2, dtype=torch.float64) * pair_cross_entropy).sum()
    assert loss_fn(student_logits, teacher_probs).item() == pytest.approx(weighted.item(), rel=1e-12)


def test_half_inputs_are_computed_in_float32():
    student_logits, teacher_probs = random_inputs(4, 2, num_prototypes=64, dtype=torch.float32)
    student_logits = student_logits * 3  # sharp logits: float16 arithmetic would be off by ~1e-3
    loss_half = DINOLoss()(student_logits.half(), teacher_probs.half())
    loss_float = DINOLoss()(student_logits.half().float(), teacher_probs.half().float())
    assert loss_half.dtype == torch.float32
    assert torch.isfinite(loss_half)
    assert loss_half.item() == pytest.approx(loss_float.item(), rel=1e-6)


def test_gradient_flows_to_student_only():
    student_logits, teacher_probs = random_inputs(4, 2)
    student_logits.requires_grad_(True)
    DINOLoss()(student_logits, teacher_probs).backward()
    assert student_logits.grad is not None and student_logits.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("student_shape", "teacher_shape", "message"),
    [
        ((4, 3, 7), (2, 5, 7), "batch size B"),  # B mismatch
        ((4, 3, 7), (2, 3, 6), "batch size B"),  # K mismatch
        ((1, 3, 7), (2, 3, 7), "S >= T"),
        ((4, 21), (2, 3, 7), r"\[S, B, K\]"),
        ((1, 3, 7), (1, 3, 7), "no \\(student crop, teacher view\\) pair"),
    ],
)
def test_bad_shapes_raise(student_shape, teacher_shape, message):
    with pytest.raises(ValueError, match=message) as error:
        DINOLoss()(torch.randn(student_shape), torch.randn(teacher_shape).softmax(-1))
    if "no (student" not in str(error.value):
        assert str(tuple(student_shape)) in str(error.value)  # the message names the shapes


def test_rejects_non_positive_temperature():
    with pytest.raises(ValueError, match="student_temperature"):
        DINOLoss(student_temperature=0.0)
