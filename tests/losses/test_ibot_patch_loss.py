"""iBOTPatchLoss: the average over global crops of the per-image mean CE over masked patches."""

import math

import pytest
import torch

from clsvit_lightning.losses import iBOTPatchLoss, masks_weight_from_masks


def random_masked_batch(num_images=5, num_patches=6, num_prototypes=4, dtype=torch.float64):
    masks = torch.rand(num_images, num_patches) < 0.5  # [N, P]
    masks[0] = False  # an image without masked patches
    masks[1] = False
    masks[1, 2] = True  # an image with a single masked patch
    masks[2] = True  # a fully masked image
    student_patch_logits = torch.randn(num_images, num_patches, num_prototypes, dtype=dtype)  # [N, P, K]
    teacher_patch_probs = torch.randn(num_images, num_patches, num_prototypes, dtype=dtype).softmax(-1)  # [N, P, K]
    return masks, student_patch_logits, teacher_patch_probs


def naive_ibot_loss(masks, student_patch_logits, teacher_patch_probs, student_temperature):
    """Loop over images, then over their masked patches; unmasked images count 0."""
    num_images, num_patches, num_prototypes = student_patch_logits.shape
    per_image_means = []
    for n in range(num_images):
        patch_losses = []
        for p in range(num_patches):
            if not masks[n, p]:
                continue
            scaled = [student_patch_logits[n, p, k].item() / student_temperature for k in range(num_prototypes)]
            log_normalizer = math.log(sum(math.exp(v) for v in scaled))
            patch_losses.append(
                -sum(teacher_patch_probs[n, p, k].item() * (scaled[k] - log_normalizer) for k in range(num_prototypes))
            )
        per_image_means.append(sum(patch_losses) / len(patch_losses) if patch_losses else 0.0)
    return sum(per_image_means) / num_images


@pytest.mark.parametrize("student_temperature", [0.1, 0.3])
def test_matches_naive_loop_over_images_and_masked_patches(student_temperature):
    masks, student, teacher = random_masked_batch()
    expected = naive_ibot_loss(masks, student, teacher, student_temperature)
    loss = iBOTPatchLoss(student_temperature)(
        student[masks], teacher[masks], masks_weight_from_masks(masks, dtype=torch.float64), num_images=masks.shape[0]
    )
    assert loss.shape == ()
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_is_not_a_plain_mean_over_masked_patches():
    """Images with few masked patches weigh as much as images with many."""
    masks, student, teacher = random_masked_batch()
    loss_fn = iBOTPatchLoss()
    loss = loss_fn(student[masks], teacher[masks], masks_weight_from_masks(masks), num_images=masks.shape[0])
    num_masked = int(masks.sum())
    uniform_weight = torch.full((num_masked,), 1.0 / num_masked, dtype=torch.float64)
    plain_mean = loss_fn(student[masks], teacher[masks], uniform_weight, num_images=1)
    assert not torch.isclose(loss, plain_mean)


def test_masks_weight_order_and_values():
    masks = torch.tensor(
        [
            [True, False, True, True],  # 3 masked
            [False, False, False, False],  # none
            [False, True, False, False],  # 1 masked
            [True, True, False, False],  # 2 masked
        ]
    )
    masks_weight = masks_weight_from_masks(masks)
    assert masks_weight.dtype == torch.float32
    expected = torch.tensor([1 / 3, 1 / 3, 1 / 3, 1.0, 1 / 2, 1 / 2])
    assert torch.allclose(masks_weight, expected)
    # Same order as masks.nonzero(): entry m belongs to image masks.nonzero()[m, 0].
    image_of_patch = masks.nonzero()[:, 0]
    assert torch.allclose(masks_weight, 1 / masks.sum(1).float()[image_of_patch])
    # Each image with masked patches sums to 1.
    per_image = torch.zeros(4).index_add_(0, image_of_patch, masks_weight)
    assert torch.allclose(per_image, torch.tensor([1.0, 0.0, 1.0, 1.0]))


def test_half_inputs_are_computed_in_float32():
    masks, student, teacher = random_masked_batch(num_prototypes=64, dtype=torch.float32)
    student, teacher = student[masks] * 3, teacher[masks]
    masks_weight = masks_weight_from_masks(masks)
    loss_half = iBOTPatchLoss()(student.half(), teacher.half(), masks_weight, num_images=5)
    loss_float = iBOTPatchLoss()(student.half().float(), teacher.half().float(), masks_weight, num_images=5)
    assert loss_half.dtype == torch.float32
    assert loss_half.item() == pytest.approx(loss_float.item(), rel=1e-6)


def test_no_masked_patch_gives_zero_with_gradient():
    masks = torch.zeros(3, 4, dtype=torch.bool)
    student = torch.randn(0, 5, requires_grad=True)
    loss = iBOTPatchLoss()(student, torch.zeros(0, 5), masks_weight_from_masks(masks), num_images=3)
    assert loss.item() == 0.0
    loss.backward()  # still part of the graph


def test_gradient_flows_to_student():
    masks, student, teacher = random_masked_batch()
    student_masked = student[masks].requires_grad_(True)
    iBOTPatchLoss()(student_masked, teacher[masks], masks_weight_from_masks(masks), num_images=5).backward()
    assert student_masked.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("student_shape", "teacher_shape", "weight_shape", "message"),
    [
        ((6, 4), (6, 5), (6,), "both \\[M, K\\]"),
        ((6, 4), (5, 4), (6,), "both \\[M, K\\]"),
        ((2, 3, 4), (2, 3, 4), (6,), "both \\[M, K\\]"),
        ((6, 4), (6, 4), (5,), "masks_weight \\[M\\]"),
        ((6, 4), (6, 4), (6, 1), "masks_weight \\[M\\]"),
    ],
)
def test_bad_shapes_raise(student_shape, teacher_shape, weight_shape, message):
    with pytest.raises(ValueError, match=message) as error:
        iBOTPatchLoss()(torch.randn(student_shape), torch.rand(teacher_shape), torch.rand(weight_shape), num_images=2)
    assert str(tuple(student_shape)) in str(error.value)


def test_bad_num_images_and_masks_raise():
    with pytest.raises(ValueError, match="num_images"):
        iBOTPatchLoss()(torch.randn(2, 3), torch.rand(2, 3), torch.rand(2), num_images=0)
    with pytest.raises(ValueError, match="bool"):
        masks_weight_from_masks(torch.ones(2, 3))
    with pytest.raises(ValueError, match="N_images, N_patches"):
        masks_weight_from_masks(torch.ones(6, dtype=torch.bool))
