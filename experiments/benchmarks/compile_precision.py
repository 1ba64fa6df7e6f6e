"""Backbone speed and memory across modes: eager vs compiled, fp32 vs bf16, checkpointing off/on.

    .venv/bin/python experiments/benchmarks/compile_precision.py [--size small --batch_size 8 --rounds 3]

Prints one JSON object. Every variant (vanilla and specialized x mode) is measured in this process,
interleaved round by round, medians over rounds (ratios: medians of the per-round ratios); on a
shared machine read the ratios, not the absolute numbers. Modes:

* ``eager``, ``compiled`` (blocks compiled in place, ``models/compile.py``): forward and train step;
* ``eager_bf16``, ``compiled_bf16``: the same under ``torch.autocast("cpu", torch.bfloat16)``, as the
  Trainer's ``precision="bf16-mixed"`` runs them;
* ``eager_checkpointing``, ``compiled_checkpointing``: train step with per-block activation
  checkpointing (the forward in eval mode does not checkpoint).

Memory: peak CPU memory of one fp32 eager train step (parameters, gradients and AdamW state
included, as ``torch.cuda.max_memory_allocated`` would count them; the step's allocations from
``torch.profiler``'s memory timeline), for vanilla and specialized, checkpointing off and on. The
gradients are zeroed in place (kept), and AdamW is the fused one, so the state whose size follows
the parameter count (parameters, gradients, two moments: 16 bytes per parameter) is resident and
everything above it is the step's working memory: activations, recomputed blocks, temporaries.
A specialized model has more parameters by design (``paper``: +8.3 %); the target applies to
the working memory, and the full peak is reported beside it with the part explained by the
parameters (``peak_ratio_from_parameters_alone``).

Targets (CPU): compiled train step >= 1.05 x eager; specialized / vanilla <= 1.02 in every mode;
peak memory specialized / vanilla <= 1.02 (working memory, see above). The forward's FLOP/s
against a 2048^2 fp32 matmul is reported as a figure; its former targets (0.75 x eager, 0.85 x
compiled) were withdrawn: they asked for CPU-only complexity that GPU training never runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics

import torch
from backbone import MatmulReference, make_steps, paired_ratio, time_call  # same folder: run as a script
from torch._dynamo.utils import counters
from torch.profiler import ProfilerActivity, profile
from torch.profiler._memory_profiler import Action

from clsvit_lightning.cpu_allocator import keep_freed_memory
from clsvit_lightning.models import SIZES, count_flops_per_image
from clsvit_lightning.models.compile import compile_blocks

# mode -> (compiled, bf16, checkpointing)
MODES = {
    "eager": (False, False, False),
    "compiled": (True, False, False),
    "eager_bf16": (False, True, False),
    "compiled_bf16": (True, True, False),
    "eager_checkpointing": (False, False, True),
    "compiled_checkpointing": (True, False, True),
}


def in_mode(fn, bf16: bool, checkpointing: bool, model: torch.nn.Module):
    def run() -> None:
        # One model serves several modes: the checkpointing switch is read at every forward.
        model.activation_checkpointing = checkpointing
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with autocast:
            fn()

    return run


def resident_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the parameters, their gradients and the optimizer state (storages counted once)."""
    tensors = list(model.parameters()) + [p.grad for p in model.parameters() if p.grad is not None]
    tensors += [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
    return sum(t.untyped_storage().nbytes() for t in {t.untyped_storage().data_ptr(): t for t in tensors}.values())


def peak_memory_bytes(train_step, model: torch.nn.Module) -> tuple[int, int]:
    """(peak, resident) CPU bytes of one train step.

    ``resident``: parameters, gradients and AdamW state, counted directly (the step zeroes the
    gradients in place). The step's own allocations come from ``torch.profiler``'s memory
    timeline: the running maximum of tensors created minus tensors freed.
    """
    resident = resident_bytes(model, train_step.optimizer)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        train_step()
    delta = peak_delta = 0
    for _, action, (key, _), size in prof._memory_profile().timeline:
        if key.device.type != "cpu":
            continue
        if action == Action.CREATE:
            delta += size
        elif action == Action.DESTROY:
            delta -= size
        peak_delta = max(peak_delta, delta)
    return resident + peak_delta, resident


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="small", choices=sorted(SIZES))
    parser.add_argument("--patch_size", type=int, default=16)
    parser.add_argument("--img_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--specialization", default="paper")
    parser.add_argument("--num_registers", type=int, default=0)
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {list(MODES)}")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory_batch_size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    malloc_tuning = keep_freed_memory()  # as `clsvit` does (clsvit_lightning/cpu_allocator.py)
    if args.threads:
        torch.set_num_threads(args.threads)
    modes = args.modes.split(",")
    torch.manual_seed(0)
    images = torch.randn(args.batch_size, 3, args.img_size, args.img_size)

    # One eager and one compiled model per specialization; the modes share them.
    runners: dict[tuple[str, str], dict[str, object]] = {}
    models = {}
    for name, spec in (("vanilla", "vanilla"), ("specialized", args.specialization)):
        for compiled in sorted({MODES[m][0] for m in modes}):
            model = SIZES[args.size](
                patch_size=args.patch_size, img_size=args.img_size, specialization=spec,
                num_registers=args.num_registers,
            )  # fmt: skip
            if compiled:
                compile_blocks(model)
            models[name, compiled] = model
            forward, train_step = make_steps(model, images)
            for mode in modes:
                if MODES[mode][0] != compiled:
                    continue
                _, bf16, checkpointing = MODES[mode]
                runners[name, mode] = {"train_step": in_mode(train_step, bf16, checkpointing, model)}
                if not checkpointing:  # eval-mode forward: checkpointing changes nothing there
                    runners[name, mode]["forward"] = in_mode(forward, bf16, checkpointing, model)

    reference = MatmulReference()
    times = {key: {phase: [] for phase in phases} for key, phases in runners.items()}
    for phases in runners.values():  # warm-up: compilation, allocator, oneDNN caches
        for run in phases.values():
            run()
    keys = list(runners)
    for round_index in range(args.rounds):
        for key in keys if round_index % 2 == 0 else reversed(keys):  # no first-mover bias
            for phase, run in runners[key].items():
                times[key][phase] += time_call(run, 1)
        reference.time()
    matmul = reference.flops_per_second

    median = {key: {phase: statistics.median(t) for phase, t in phases.items()} for key, phases in times.items()}
    flops = count_flops_per_image(next(model for (name, _), model in models.items() if name == "vanilla"))
    result: dict[str, object] = {
        "benchmark": "compile_precision",
        "malloc_tuning": malloc_tuning,
        "model": f"vit_{args.size}/{args.patch_size}",
        "specialization": args.specialization,
        "img_size": args.img_size,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "matmul_2048_gflops_per_s": matmul / 1e9,
        "images_per_s": {
            f"{name}_{mode}_{phase}": args.batch_size / seconds
            for (name, mode), phases in median.items()
            for phase, seconds in phases.items()
        },
        "time_ratio_specialized_vs_vanilla": {
            f"{mode}_{phase}": paired_ratio(times["specialized", mode][phase], times["vanilla", mode][phase])
            for mode in modes
            for phase in median["vanilla", mode]
        },
        "speedup_vs_eager": {
            f"{name}_{mode}_{phase}": paired_ratio(times[name, "eager"][phase], times[name, mode][phase])
            for name in ("vanilla", "specialized")
            for mode in modes
            for phase in median[name, mode]
            if mode != "eager" and "eager" in modes and phase in median[name, "eager"]
        },
        "forward_flops_vs_matmul": {
            f"{name}_{mode}": flops * args.batch_size / median[name, mode]["forward"] / matmul
            for name in ("vanilla", "specialized")
            for mode in ("eager", "compiled")
            if mode in modes
        },
    }

    # Graphs compiled, and frames that fell back to eager (recompile limit, unsupported code): expect none.
    result["dynamo"] = {**counters["stats"], "graph_breaks": sum(counters["graph_break"].values())}

    memory_images = torch.randn(args.memory_batch_size, 3, args.img_size, args.img_size)
    peaks, above_resident = {}, {}
    for name in ("vanilla", "specialized"):
        model = SIZES[args.size](
            patch_size=args.patch_size, img_size=args.img_size,
            specialization="vanilla" if name == "vanilla" else args.specialization, num_registers=args.num_registers,
        )  # fmt: skip
        _, train_step = make_steps(model, memory_images, keep_gradients=True)
        for checkpointing in (False, True):
            run = in_mode(train_step, False, checkpointing, model)
            run()  # gradients and AdamW state exist from here on, as in a running training
            run.optimizer = train_step.optimizer
            key = f"{name}_{'checkpointing' if checkpointing else 'plain'}"
            peak, resident = peak_memory_bytes(run, model)
            peaks[key], above_resident[key] = peak, peak - resident
    result["memory_batch_size"] = args.memory_batch_size
    result["peak_memory_mib"] = {key: value / 2**20 for key, value in peaks.items()}
    result["peak_memory_ratio_specialized_vs_vanilla"] = {
        kind: peaks[f"specialized_{kind}"] / peaks[f"vanilla_{kind}"] for kind in ("plain", "checkpointing")
    }
    # What the full peak ratio would be if the specialized step used exactly the vanilla working memory.
    resident = {key: peaks[key] - above_resident[key] for key in peaks}
    result["peak_ratio_from_parameters_alone"] = {
        kind: (peaks[f"vanilla_{kind}"] + resident[f"specialized_{kind}"] - resident[f"vanilla_{kind}"])
        / peaks[f"vanilla_{kind}"]
        for kind in ("plain", "checkpointing")
    }
    # The step's working memory (activations, recomputed blocks, temporaries): the peak above the
    # resident parameters, gradients and optimizer state.
    result["working_memory_mib"] = {key: value / 2**20 for key, value in above_resident.items()}
    result["working_memory_ratio_specialized_vs_vanilla"] = {
        kind: above_resident[f"specialized_{kind}"] / above_resident[f"vanilla_{kind}"]
        for kind in ("plain", "checkpointing")
    }
    result["checkpointing_memory_saving"] = {
        name: 1 - peaks[f"{name}_checkpointing"] / peaks[f"{name}_plain"] for name in ("vanilla", "specialized")
    }

    speedups = result["speedup_vs_eager"]
    targets = {
        "specialized_vs_vanilla<=1.02_every_mode": all(
            r <= 1.02 for r in result["time_ratio_specialized_vs_vanilla"].values()
        ),
        "working_memory_specialized_vs_vanilla<=1.02": all(
            r <= 1.02 for r in result["working_memory_ratio_specialized_vs_vanilla"].values()
        ),
    }
    for name in ("vanilla", "specialized"):
        if f"{name}_compiled_train_step" in speedups:
            targets[f"{name}_compiled_train_step>=1.05x_eager"] = speedups[f"{name}_compiled_train_step"] >= 1.05
    result["targets"] = targets
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
