"""Teacher targets: Sinkhorn-Knopp and centering, on one process and split across two gloo ranks."""

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from clsvit_lightning.losses import CenteringTargets, sinkhorn_knopp, teacher_probabilities

TEACHER_TEMPERATURE = 0.07


def numpy_sinkhorn_knopp(logits, temperature, iterations):
    """An independent float64 NumPy transcription of SwAV/DINOv2's steps."""
    joint = np.exp(np.asarray(logits, dtype=np.float64) / temperature).T  # [K, B]
    num_prototypes, num_samples = joint.shape
    joint = joint / joint.sum()
    for _ in range(iterations):
        joint = joint / joint.sum(axis=1, keepdims=True) / num_prototypes
        joint = joint / joint.sum(axis=0, keepdims=True) / num_samples
    return (joint * num_samples).T  # [B, K]


# ---------------------------------------------------------------------------------------------- Sinkhorn-Knopp


def test_sinkhorn_knopp_converges_to_equipartition():
    num_samples, num_prototypes = 6, 4
    logits = torch.randn(num_samples, num_prototypes, dtype=torch.float64)
    targets = sinkhorn_knopp(logits, temperature=0.5, iterations=50)  # [B, K]
    assert targets.shape == (num_samples, num_prototypes)
    assert targets.is_contiguous()  # callers may .view() it back to [T, B, K]
    assert torch.allclose(targets.sum(dim=1), torch.ones(num_samples, dtype=torch.float64))  # per-sample distributions
    # Every prototype receives B/K samples' worth of mass.
    expected_prototype_mass = torch.full((num_prototypes,), num_samples / num_prototypes, dtype=torch.float64)
    assert torch.allclose(targets.sum(dim=0), expected_prototype_mass, atol=1e-6)


def test_three_iterations_do_not_reach_equipartition():
    logits = torch.randn(6, 4, dtype=torch.float64) * 3
    targets = sinkhorn_knopp(logits, temperature=0.5, iterations=3)
    assert torch.allclose(targets.sum(dim=1), torch.ones(6, dtype=torch.float64))  # always distributions
    assert not torch.allclose(targets.sum(dim=0), torch.full((4,), 6 / 4, dtype=torch.float64), atol=1e-6)


@pytest.mark.parametrize("iterations", [1, 3])
@pytest.mark.parametrize(("dtype", "rtol"), [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_sinkhorn_knopp_matches_numpy(iterations, dtype, rtol):
    logits = torch.randn(10, 7, dtype=dtype)
    targets = sinkhorn_knopp(logits, temperature=0.3, iterations=iterations)
    expected = numpy_sinkhorn_knopp(logits.double().numpy(), 0.3, iterations)
    assert targets.dtype == dtype
    np.testing.assert_allclose(targets.double().numpy(), expected, rtol=rtol, atol=1e-12)


def test_sinkhorn_knopp_is_stable_where_plain_exp_overflows():
    logits = torch.rand(8, 5, dtype=torch.float64) * 2 - 1  # in [-1, 1], like the DINO head's cosine logits
    shifted = logits + 1000.0  # exp(1000 / 0.07) overflows even float64
    assert torch.isinf(torch.exp(shifted / TEACHER_TEMPERATURE)).all()
    targets = sinkhorn_knopp(shifted, TEACHER_TEMPERATURE)
    assert torch.isfinite(targets).all()
    # Subtracting the max does not change the result: a constant shift of the logits cancels.
    expected = numpy_sinkhorn_knopp(logits.numpy(), TEACHER_TEMPERATURE, 3)
    np.testing.assert_allclose(targets.numpy(), expected, rtol=1e-6, atol=1e-12)


def test_sinkhorn_knopp_half_inputs_give_float32_without_gradient():
    logits = torch.randn(8, 5, requires_grad=True)
    targets = sinkhorn_knopp(logits.half(), TEACHER_TEMPERATURE)
    assert targets.dtype == torch.float32
    assert not targets.requires_grad
    assert torch.allclose(targets, sinkhorn_knopp(logits.detach().half().float(), TEACHER_TEMPERATURE))


def test_sinkhorn_knopp_bad_arguments_raise():
    with pytest.raises(ValueError, match=r"\[B, K\]"):
        sinkhorn_knopp(torch.randn(2, 3, 4), TEACHER_TEMPERATURE)
    with pytest.raises(ValueError, match="temperature"):
        sinkhorn_knopp(torch.randn(3, 4), 0.0)
    with pytest.raises(ValueError, match="iterations"):
        sinkhorn_knopp(torch.randn(3, 4), TEACHER_TEMPERATURE, iterations=0)


# ---------------------------------------------------------------------------------------------- centering


def test_centering_uses_the_previous_center_then_updates_by_ema():
    num_prototypes, momentum = 5, 0.9
    centering = CenteringTargets(num_prototypes, momentum=momentum)
    first, second = torch.randn(4, num_prototypes) * 2, torch.randn(6, num_prototypes) * 2

    probs_first = centering(first, TEACHER_TEMPERATURE)
    assert torch.allclose(probs_first, F.softmax(first / TEACHER_TEMPERATURE, dim=-1))  # center starts at 0
    center_first = (1 - momentum) * first.mean(dim=0, keepdim=True)
    assert torch.allclose(centering.center, center_first)

    probs_second = centering(second, TEACHER_TEMPERATURE)
    assert torch.allclose(probs_second, F.softmax((second - center_first) / TEACHER_TEMPERATURE, dim=-1))
    center_second = momentum * center_first + (1 - momentum) * second.mean(dim=0, keepdim=True)
    assert torch.allclose(centering.center, center_second)
    assert not torch.allclose(center_second, center_first)


def test_update_center_alone_matches_forward():
    logits = torch.randn(4, 3)
    by_forward, by_update = CenteringTargets(3, momentum=0.8), CenteringTargets(3, momentum=0.8)
    by_forward(logits, TEACHER_TEMPERATURE)
    by_update.update_center(logits)
    assert torch.equal(by_forward.center, by_update.center)


def test_centering_empty_batch_keeps_the_center():
    centering = CenteringTargets(3)
    centering.update_center(torch.randn(4, 3))
    before = centering.center.clone()
    probs = centering(torch.randn(0, 3), TEACHER_TEMPERATURE)
    assert probs.shape == (0, 3)
    assert torch.equal(centering.center, before)


def test_center_is_checkpointed():
    centering = CenteringTargets(4)
    centering(torch.randn(5, 4), TEACHER_TEMPERATURE)
    state = centering.state_dict()
    assert set(state) == {"center"}
    assert state["center"].shape == (1, 4)
    restored = CenteringTargets(4)
    restored.load_state_dict(state)
    logits = torch.randn(3, 4)
    assert torch.equal(restored(logits, TEACHER_TEMPERATURE), centering(logits, TEACHER_TEMPERATURE))


def test_centering_half_inputs_give_float32_without_gradient():
    logits = torch.randn(4, 3, requires_grad=True)
    probs = CenteringTargets(3)(logits.half(), TEACHER_TEMPERATURE)
    assert probs.dtype == torch.float32
    assert not probs.requires_grad


def test_centering_bad_arguments_raise():
    with pytest.raises(ValueError, match=r"\[B, 4\]"):
        CenteringTargets(4)(torch.randn(2, 5), TEACHER_TEMPERATURE)
    with pytest.raises(ValueError, match="temperature"):
        CenteringTargets(4)(torch.randn(2, 4), -1.0)
    with pytest.raises(ValueError, match="momentum"):
        CenteringTargets(4, momentum=1.5)


# ---------------------------------------------------------------------------------------------- dispatcher


def test_teacher_probabilities_dispatches():
    logits = torch.randn(6, 4)
    assert torch.equal(
        teacher_probabilities(logits, TEACHER_TEMPERATURE, "sinkhorn_knopp"),
        sinkhorn_knopp(logits, TEACHER_TEMPERATURE),
    )
    centering, reference = CenteringTargets(4), CenteringTargets(4)
    for _ in range(2):  # the second call sees the updated center
        probs = teacher_probabilities(logits, TEACHER_TEMPERATURE, "centering", centering=centering)
        assert torch.equal(probs, reference(logits, TEACHER_TEMPERATURE))
    with pytest.raises(ValueError, match="CenteringTargets"):
        teacher_probabilities(logits, TEACHER_TEMPERATURE, "centering")
    with pytest.raises(ValueError, match="unknown"):
        teacher_probabilities(logits, TEACHER_TEMPERATURE, "softmax")


def test_single_process_never_all_reduces(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("all_reduce called without an initialised process group")

    monkeypatch.setattr(dist, "all_reduce", fail)
    logits = torch.randn(6, 4)
    sinkhorn_knopp(logits, TEACHER_TEMPERATURE, num_samples=6)
    CenteringTargets(4)(logits, TEACHER_TEMPERATURE)


# ---------------------------------------------------------------------------------------------- two gloo ranks

WORLD_SIZE = 2
IBOT_ROWS_PER_RANK = (3, 6)  # masked patches differ across ranks
EMPTY_RANK_ROWS = (0, 5)  # a rank without any masked patch


def _distributed_worker(rank, init_file, inputs, output_dir):
    """One rank: computes targets on its share of each batch and saves them."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        results = {}
        # DINO: equal halves, B defaults to local rows x world size.
        dino_half = inputs["dino_logits"].chunk(WORLD_SIZE)[rank]
        results["dino_sinkhorn"] = sinkhorn_knopp(dino_half, TEACHER_TEMPERATURE)
        # iBOT: unequal shares, B is the all-reduced count, as the training step computes it.
        for name, rows_per_rank in (("ibot", IBOT_ROWS_PER_RANK), ("empty_rank", EMPTY_RANK_ROWS)):
            local = inputs[f"{name}_logits"].split(rows_per_rank)[rank]
            num_samples = torch.tensor(local.shape[0])
            dist.all_reduce(num_samples)
            results[f"{name}_sinkhorn"] = sinkhorn_knopp(local, TEACHER_TEMPERATURE, num_samples=num_samples)
        # Centering over two steps, on unequal shares: the center must follow the global batch mean.
        centering = CenteringTargets(inputs["dino_logits"].shape[1])
        for step, batch in enumerate(inputs["centering_batches"]):
            local = batch.split(IBOT_ROWS_PER_RANK)[rank]
            results[f"centering_probs_{step}"] = centering(local, TEACHER_TEMPERATURE)
            results[f"center_{step}"] = centering.center.clone()
        torch.save(results, output_dir / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def distributed_run(tmp_path_factory):
    """Inputs, and each rank's results on its share of them (one spawn for all distributed tests)."""
    generator = torch.Generator().manual_seed(0)
    num_prototypes = 6

    def logits(rows):  # in [-1, 1], like the DINO head's cosine logits
        return torch.rand(rows, num_prototypes, generator=generator) * 2 - 1

    inputs = {
        "dino_logits": logits(8),
        "ibot_logits": logits(sum(IBOT_ROWS_PER_RANK)),
        "empty_rank_logits": logits(sum(EMPTY_RANK_ROWS)),
        "centering_batches": [logits(sum(IBOT_ROWS_PER_RANK)), logits(sum(IBOT_ROWS_PER_RANK))],
    }
    run_dir = tmp_path_factory.mktemp("gloo")
    mp.spawn(_distributed_worker, args=(run_dir / "init", inputs, run_dir), nprocs=WORLD_SIZE, join=True)
    per_rank = [torch.load(run_dir / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD_SIZE)]
    return inputs, per_rank


def gathered(per_rank, name):
    return torch.cat([results[name] for results in per_rank])


@pytest.mark.parametrize("name", ["dino", "ibot", "empty_rank"])
def test_distributed_sinkhorn_knopp_equals_one_process(distributed_run, name):
    inputs, per_rank = distributed_run
    one_process = sinkhorn_knopp(inputs[f"{name}_logits"], TEACHER_TEMPERATURE)
    assert torch.allclose(gathered(per_rank, f"{name}_sinkhorn"), one_process, atol=1e-6)


def test_distributed_sinkhorn_knopp_differs_from_per_rank_normalisation(distributed_run):
    """The check above can fail: each rank normalising alone gives other targets."""
    inputs, _ = distributed_run
    shares = inputs["ibot_logits"].split(IBOT_ROWS_PER_RANK)
    per_rank_alone = torch.cat([sinkhorn_knopp(share, TEACHER_TEMPERATURE) for share in shares])
    assert not torch.allclose(per_rank_alone, sinkhorn_knopp(inputs["ibot_logits"], TEACHER_TEMPERATURE), atol=1e-3)


def test_distributed_centering_equals_one_process(distributed_run):
    inputs, per_rank = distributed_run
    centering = CenteringTargets(inputs["dino_logits"].shape[1])
    for step, batch in enumerate(inputs["centering_batches"]):
        one_process_probs = centering(batch, TEACHER_TEMPERATURE)
        assert torch.allclose(gathered(per_rank, f"centering_probs_{step}"), one_process_probs, atol=1e-6)
        for results in per_rank:  # every rank holds the same center
            assert torch.allclose(results[f"center_{step}"], centering.center, atol=1e-6)
    assert centering.center.abs().sum() > 0
