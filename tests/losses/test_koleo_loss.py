"""KoLeoLoss: minus the mean log distance to the nearest other L2-normalised feature."""

import math

import pytest
import torch

from clsvit_lightning.losses import KoLeoLoss


def naive_koleo_loss(features, eps=1e-8):
    """Brute-force nearest neighbours; distance as nn.PairwiseDistance(2, eps) computes it."""
    rows = [[v.item() for v in row] for row in features]
    normalized = []
    for row in rows:
        norm = max(math.sqrt(sum(v * v for v in row)), eps)
        normalized.append([v / norm for v in row])
    log_distances = []
    for i, x in enumerate(normalized):
        best_j, best_similarity = None, -math.inf
        for j, y in enumerate(normalized):
            similarity = sum(a * b for a, b in zip(x, y, strict=True))
            if j != i and similarity > best_similarity:
                best_j, best_similarity = j, similarity
        y = normalized[best_j]
        distance = math.sqrt(sum((a - b + eps) ** 2 for a, b in zip(x, y, strict=True)))
        log_distances.append(math.log(distance + eps))
    return -sum(log_distances) / len(log_distances)


@pytest.mark.parametrize(("batch_size", "dim"), [(2, 3), (7, 5), (16, 4)])
def test_matches_brute_force_nearest_neighbours(batch_size, dim):
    features = torch.randn(batch_size, dim, dtype=torch.float64) * 3
    loss = KoLeoLoss()(features)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(naive_koleo_loss(features), rel=1e-10)


def test_a_sample_is_not_its_own_neighbour():
    # Two antipodal points: each one's only neighbour is the other, at distance 2.
    features = torch.tensor([[1.0, 0.0], [-3.0, 0.0]])
    assert KoLeoLoss()(features).item() == pytest.approx(-math.log(2.0), rel=1e-6)


def test_duplicate_features_are_each_others_neighbour():
    features = torch.tensor([[1.0, 2.0], [2.0, 4.0], [0.0, -1.0]], dtype=torch.float64)  # rows 0, 1 same direction
    loss = KoLeoLoss()(features)
    # Rows 0 and 1 are at distance ~sqrt(2) * eps, so the loss is dominated by -log(eps)-sized terms.
    assert loss.item() > 10
    assert loss.item() == pytest.approx(naive_koleo_loss(features), rel=1e-6)


def test_invariant_to_feature_scale():
    features = torch.randn(6, 4)
    scales = torch.rand(6, 1) * 10 + 0.1
    assert torch.allclose(KoLeoLoss()(features), KoLeoLoss()(features * scales), atol=1e-5)


def test_half_inputs_are_computed_in_float32():
    features = torch.randn(8, 16)
    loss_half = KoLeoLoss()(features.half())
    assert loss_half.dtype == torch.float32
    assert loss_half.item() == pytest.approx(KoLeoLoss()(features.half().float()).item(), rel=1e-6)


def test_gradient_flows_through_the_distance():
    features = torch.randn(5, 3, requires_grad=True)
    KoLeoLoss()(features).backward()
    assert features.grad is not None and features.grad.abs().sum() > 0


@pytest.mark.parametrize("shape", [(1, 4), (0, 4), (4,), (2, 3, 4)])
def test_bad_shapes_raise(shape):
    with pytest.raises(ValueError, match="B >= 2") as error:
        KoLeoLoss()(torch.randn(shape))
    assert str(tuple(shape)) in str(error.value)
