import math

import numpy as np
import pytest

from clsvit_lightning.training.schedules import (
    cosine_schedule,
    linear_warmup_then_constant,
    scaled_learning_rate,
    value_at,
    warmup_poly_schedule,
)


def test_cosine_schedule_hand_computed_points():
    schedule = cosine_schedule(base_value=1.0, final_value=0.0, total_steps=14, warmup_steps=4, freeze_steps=2)
    assert len(schedule) == 14
    assert schedule[:2].tolist() == [0.0, 0.0]  # frozen
    assert schedule[2:6].tolist() == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])  # warmup from 0 to base, both included
    cosine = schedule[6:]  # 8 steps: 0.5 * (1 + cos(pi * i / 8))
    assert cosine.tolist() == pytest.approx([0.5 * (1 + math.cos(math.pi * i / 8)) for i in range(8)])
    assert cosine[0] == 1.0 and cosine[4] == pytest.approx(0.5)


def test_dinov2_weight_decay_and_momentum_schedules():
    wd = cosine_schedule(0.04, 0.4, total_steps=1000)
    assert wd[0] == pytest.approx(0.04) and wd[500] == pytest.approx(0.22) and wd[-1] == pytest.approx(0.4, abs=1e-5)
    momentum = cosine_schedule(0.992, 1.0, total_steps=100)
    assert np.all(np.diff(momentum) >= 0) and momentum[0] == 0.992


def test_teacher_temperature_warms_up_linearly_then_stays():
    schedule = linear_warmup_then_constant(0.04, 0.07, warmup_steps=30, total_steps=100)
    # DINOv2: linspace(0.04, 0.07, 30), 0.07 reached at step 29, then constant.
    assert schedule[0] == 0.04 and schedule[15] == pytest.approx(0.04 + 0.03 * 15 / 29)
    assert schedule[29:].tolist() == pytest.approx([0.07] * 71)
    cut = linear_warmup_then_constant(0.04, 0.07, warmup_steps=300, total_steps=10)
    assert len(cut) == 10 and cut[-1] == pytest.approx(0.04 + 0.03 * 9 / 299)


def test_value_at_holds_the_last_value_past_the_end():
    schedule = cosine_schedule(1.0, 0.5, total_steps=5)
    assert value_at(schedule, 100) == schedule[-1]


def test_lr_scaling_rules():
    assert scaled_learning_rate(0.004, 2048) == pytest.approx(0.004 * math.sqrt(2))  # DINOv2 README: ~0.00566
    assert scaled_learning_rate(5e-4, 512, "linear_wrt_256") == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="unknown lr scaling rule 'sqrt'"):
        scaled_learning_rate(0.004, 1024, "sqrt")


def test_bad_schedule_lengths_are_refused():
    with pytest.raises(ValueError, match=r"freeze \(5\) \+ warmup \(10\) steps exceed the 12 total steps"):
        cosine_schedule(1.0, 0.0, total_steps=12, warmup_steps=10, freeze_steps=5)


def test_schedule_is_mmseg_poly_with_linear_warmup():
    total, warmup, ratio = 100, 15, 1e-6
    schedule = warmup_poly_schedule(total, warmup, ratio)
    for step in range(total):
        regular = (1 - step / total) ** 1.0  # mmseg PolyLrUpdaterHook(power=1, min_lr=0)
        if step < warmup:
            k = (1 - step / warmup) * (1 - ratio)  # mmseg get_warmup_lr("linear")
            regular *= 1 - k
        assert schedule[step] == pytest.approx(regular)
    with pytest.raises(ValueError, match="set trainer.max_steps"):
        warmup_poly_schedule(0)
