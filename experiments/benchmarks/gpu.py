"""DINOv2 pretraining steps on one GPU: vanilla vs `paper`, eager vs compiled, bf16; DDP and FSDP steps.

    make bench-gpu
    .venv/bin/python experiments/benchmarks/gpu.py [--models small16,large14 --modes eager,compiled --rounds 7]
    .venv/bin/python experiments/benchmarks/gpu.py --device cpu --tiny   # same code path, tiny model, on the CPU

Meant to take under 8 minutes on one H100 (not yet timed on one; compilation should dominate);
``--time_limit_s`` (420 by default) skips the phases that would start after it. Smoke-test the GPU
path first with ``--tiny`` (toy models, seconds). What one run measures, in one process:

* The real DINOv2 training step of ``DINOv2Pretraining``, driven as Lightning's automatic
  optimisation with ``precision="bf16-mixed"`` drives it: uint8 crops normalised on the device
  (``on_after_batch_transfer``), ``training_step`` (teacher, student, DINO + iBOT + KoLeo, the
  non-finite check) under ``torch.autocast(bfloat16)``, backward, the task's per-module gradient
  clipping, fused AdamW, the EMA teacher update. Crops: 2 x 224 global + 8 local (96 px for patch
  16, 98 for patch 14) with DINOv2's block iBOT masks. Models and heads as the recipe overlays
  (``configs/pretrain/vits16_*.yaml``, ``vitl14_*.yaml``): ViT-S/16 with drop path 0.1 and one
  65 536-prototype head; ViT-L/14 with drop path 0.4, separate DINO and iBOT heads of 131 072
  prototypes (bottleneck 384), Sinkhorn-Knopp targets.
* For each model and mode (``eager``; ``compiled``: the module's ``compile=True``, i.e.
  ``configure_model`` -> ``models/compile.py``'s per-block ``torch.compile``), vanilla and
  ``paper`` run interleaved round by round (order reversed every other round), ``--steps_per_round``
  steps per round. Per configuration: seconds per step and images/s (medians over rounds), model
  FLOP/s and MFU, peak memory; and ``time_ratio_paper_vs_vanilla``, the median of the per-round
  ratios (as ``backbone.py``).
* One DDP step and one FSDP step (``distributed/fsdp.py``'s ``BlockFSDPStrategy``) through
  Lightning's ``Trainer`` on the same device, world size 1 (``torch.distributed`` initialised
  here from a file store: nccl on CUDA, gloo on the CPU), eager, ``paper``, the last model of
  ``--models``: they prove those paths run; step time is the median interval between consecutive
  ``on_train_batch_end`` calls after the warm-up (data loading from memory, the host-to-device copy
  and Lightning's loop included). At world size 1 FSDP does not shard (torch switches the units
  to ``NO_SHARD``), but the wrapping, flat parameters and mixed-precision casts all run.

FLOPs per step are the module's own count (``DINOv2Pretraining._count_flops_per_batch``, what
``ImageThroughputMonitor`` reports): student forward x 3 (forward + backward), counting the blocks'
batch-subset stochastic depth, plus the teacher's forward. The heads and losses are left out (by a
hand count, ViT-L/14's 131 072-prototype heads would add ~3 %), so the MFU is a slight
underestimate. MFU = those FLOP/s / the card's dense bf16 peak, looked up by
``torch.cuda.get_device_name()`` (H100 SXM 989 TFLOP/s, H100 PCIe 756, H100 NVL 835, H200 989,
A100 312) or given with ``--peak_tflops``. Peak memory is ``torch.cuda.max_memory_allocated`` over
the configuration's steps less the resident state (parameters, gradients, optimizer state,
buffers) of the other variant that sits on the device beside it, i.e. the peak the configuration
would have alone; ``null`` on the CPU.

Prints one JSON object; ``targets``: ``paper`` / vanilla time <= 1.02 in every model and mode,
and ViT-L/14 compiled bf16 MFU >= 0.45 (``null`` where not measured). A phase that fails records
its error in the JSON and the run goes on. Progress goes to stderr. Without CUDA (and without
``--device cpu --tiny``) it prints a line of JSON saying so and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from backbone import paired_ratio  # same folder: run as a script
from lightning.pytorch import Callback, LightningDataModule, Trainer
from torch.utils.data import DataLoader, Dataset

from clsvit_lightning.cpu_allocator import keep_freed_memory
from clsvit_lightning.data.transforms.masking import BlockMaskGenerator, stratified_masks
from clsvit_lightning.distributed.fsdp import BlockFSDPStrategy
from clsvit_lightning.models import VisionTransformer, vit_large, vit_small
from clsvit_lightning.models.compile import compile_blocks
from clsvit_lightning.tasks.dinov2_pretraining import DINOv2Pretraining

VARIANTS = ("vanilla", "paper")
MODES = ("eager", "compiled")  # eager first: compiling is in place, one module serves both modes
GIB = 2**30
MFU_TARGET, RATIO_TARGET = 0.45, 1.02

# Dense bf16 tensor-core peaks, TFLOP/s; matched in order against torch.cuda.get_device_name()
# ("NVIDIA H100 80GB HBM3" is the SXM card, "NVIDIA H100 PCIe", "NVIDIA H100 NVL", "NVIDIA H200").
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0))


@dataclass(frozen=True)
class ModelSpec:
    """A backbone and its heads as the recipe overlays set them (configs/pretrain/*.yaml)."""

    name: str
    factory: Callable[..., VisionTransformer]
    patch_size: int
    global_size: int
    local_size: int
    drop_path_rate: float
    batch_size: int  # default per-device batch: fits an 80 GB H100 with both variants resident
    head: dict = field(default_factory=dict)

    def crops(self, num_local: int) -> str:
        return f"2x{self.global_size} + {num_local}x{self.local_size}"


# As the recipe overlays set them: configs/pretrain/vits16_*.yaml and vitl14_*.yaml over dinov2.yaml.
MODELS = {
    "small16": ModelSpec(
        name="vit_small/16", factory=vit_small, patch_size=16, global_size=224, local_size=96,
        drop_path_rate=0.1, batch_size=64,
    ),
    "large14": ModelSpec(
        name="vit_large/14", factory=vit_large, patch_size=14, global_size=224, local_size=98,
        drop_path_rate=0.4, batch_size=32,
        head=dict(separate_ibot_head=True, num_prototypes=131072, ibot_num_prototypes=131072,
                  head_bottleneck_dim=384, teacher_targets="sinkhorn_knopp"),
    ),
}  # fmt: skip
TINY_HEAD = dict(
    num_prototypes=64, head_hidden_dim=48, head_bottleneck_dim=16,
    ibot_num_prototypes=64, ibot_head_hidden_dim=48, ibot_head_bottleneck_dim=16,
)  # fmt: skip


def tiny(spec: ModelSpec) -> ModelSpec:
    """The same recipe at toy size: 2 blocks of width 32, 4 x 4 global and 2 x 2 local patch grids."""
    patch = spec.patch_size // 2
    factory = partial(VisionTransformer, img_size=4 * patch, embed_dim=32, depth=2, num_heads=2)
    return replace(
        spec, name=f"tiny{patch}", factory=factory, patch_size=patch, global_size=4 * patch, local_size=2 * patch,
        batch_size=2, head={**spec.head, **TINY_HEAD},
    )  # fmt: skip


# ----------------------------------------------------------------------------- the device
class Device:
    """Synchronisation and peak memory for CUDA; no-ops (memory ``None``) on the CPU."""

    def __init__(self, name: str) -> None:
        self.torch = torch.device(name)
        self.cuda = self.torch.type == "cuda"
        if self.cuda:  # the memory statistics and Lightning's `devices` name this card
            self.torch = torch.device("cuda", self.torch.index or 0)
            torch.cuda.set_device(self.torch)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def peak_bytes(self) -> int | None:
        return torch.cuda.max_memory_allocated() if self.cuda else None

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.torch.type, dtype=torch.bfloat16)

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()

    def describe(self) -> str:
        if self.cuda:
            return torch.cuda.get_device_name()
        import platform  # noqa: PLC0415

        return platform.processor() or platform.machine() or "cpu"


def peak_tflops_of(device_name: str) -> float | None:
    for key, value in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return value
    return None


# ----------------------------------------------------------------------------- batch and module
def make_batch(spec: ModelSpec, batch_size: int, num_local: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A collated multi-crop batch as the recipe's loader ships it: uint8 crops, block iBOT masks (CPU)."""
    generator = torch.Generator().manual_seed(seed)
    grid = spec.global_size // spec.patch_size
    masks = stratified_masks(
        BlockMaskGenerator(grid, grid), 2 * batch_size, (0.1, 0.5), 0.5, np.random.default_rng(seed)
    )

    def crops(count: int, size: int) -> torch.Tensor:
        return torch.randint(0, 256, (count, batch_size, 3, size, size), dtype=torch.uint8, generator=generator)

    return {
        "global_crops": crops(2, spec.global_size),  # [G, B, 3, H, W]
        "local_crops": crops(num_local, spec.local_size),  # [L, B, 3, h, w]
        "masks": torch.from_numpy(masks).view(2, batch_size, -1),  # [G, B, N]
    }


def build_module(spec: ModelSpec, specialization: str, device: Device) -> DINOv2Pretraining:
    with torch.device(device.torch):  # initialised in place: no host copy of ViT-L's weights
        backbone = spec.factory(
            patch_size=spec.patch_size, specialization=specialization, drop_path_rate=spec.drop_path_rate
        )
        return DINOv2Pretraining(backbone, **spec.head)


def manual_module(spec: ModelSpec, specialization: str, device: Device):
    """Module and optimizer for steps driven by hand: fixed schedules, the task's own fused AdamW."""
    module = build_module(spec, specialization, device).train()
    module.schedules = {"teacher_temperature": np.array([0.04]), "teacher_momentum": np.array([0.994])}
    optimizer = module.configure_optimizers()
    for group in optimizer.param_groups:  # what on_train_batch_start sets from the schedules
        group["lr"] = 1e-4 * group["lr_multiplier"]
        group["weight_decay"] = 0.04 * group["wd_multiplier"]
    return module, optimizer


def train_step(module: DINOv2Pretraining, optimizer: torch.optim.Optimizer, batch: dict, device: Device) -> None:
    """One optimizer step in the order of Lightning's automatic optimisation with bf16-mixed."""
    batch = module.on_after_batch_transfer(dict(batch), 0)  # uint8 -> normalised float, on the device
    with device.autocast():
        loss = module.training_step(batch, 0)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    module.configure_gradient_clipping(optimizer)
    optimizer.step()
    module.update_teacher(module.scheduled("teacher_momentum"))


def resident_bytes(module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes the module keeps on its device between steps: parameters, gradients, buffers, optimizer state."""
    tensors = [*module.parameters(), *module.buffers()]
    tensors += [p.grad for p in module.parameters() if p.grad is not None]
    tensors += [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors if t.device.type != "cpu"}
    return sum(storages.values())


def rates(flops: int, batch_size: int, step_s: float, peak_tflops: float | None) -> dict[str, float | None]:
    tflops = flops / step_s / 1e12
    return {
        "step_s": step_s,
        "images_per_s": batch_size / step_s,
        "model_tflops": tflops,
        "mfu": tflops / peak_tflops if peak_tflops else None,
    }


# ----------------------------------------------------------------------------- the timed phases
def time_mode(modules: dict, batch: dict, args: argparse.Namespace, device: Device, context: dict) -> dict:
    """Vanilla and ``paper`` interleaved: warm-up (compilation included), then ``--rounds`` rounds."""
    steps = {
        name: partial(train_step, module, optimizer, batch, device) for name, (module, optimizer) in modules.items()
    }
    first_step_s = {}
    for name, step in steps.items():
        start = time.perf_counter()
        step()
        device.sync()
        first_step_s[name] = time.perf_counter() - start
        for _ in range(args.warmup - 1):
            step()
    device.sync()
    resident = {name: resident_bytes(*pair) for name, pair in modules.items()}
    times: dict[str, list[float]] = {name: [] for name in steps}
    peaks: dict[str, int | None] = dict.fromkeys(steps)
    for round_index in range(args.rounds):
        order = list(steps) if round_index % 2 == 0 else list(reversed(steps))
        for name in order:
            device.reset_peak()
            start = time.perf_counter()
            for _ in range(args.steps_per_round):
                steps[name]()
            device.sync()
            times[name].append((time.perf_counter() - start) / args.steps_per_round)
            peak = device.peak_bytes()
            if peak is not None:  # the other variant's state sits beside it, untouched by this step
                alone = peak - sum(value for other, value in resident.items() if other != name)
                peaks[name] = max(peaks[name] or 0, alone)
    result = {}
    for name in steps:
        step_s = statistics.median(times[name])
        result[name] = {
            **rates(context["flops"][name], context["batch_size"], step_s, context["peak_tflops"]),
            "peak_memory_gib": None if peaks[name] is None else peaks[name] / GIB,
            "first_step_s": first_step_s[name],
        }
    result["time_ratio_paper_vs_vanilla"] = paired_ratio(times["paper"], times["vanilla"])
    return result


def measure_model(key: str, spec: ModelSpec, batch_size: int, args: argparse.Namespace, device: Device, clock) -> dict:
    batch = {k: v.to(device.torch) for k, v in make_batch(spec, batch_size, args.num_local_crops).items()}
    modules = {name: manual_module(spec, name, device) for name in VARIANTS}
    flops = {name: module._count_flops_per_batch(batch) for name, (module, _) in modules.items()}
    context = {"flops": flops, "batch_size": batch_size, "peak_tflops": args.peak}
    result = {
        "model": spec.name,
        "batch_size": batch_size,
        "crops": spec.crops(args.num_local_crops),
        "num_prototypes": modules["vanilla"][0].hparams.num_prototypes,
        "parameters": {
            name: sum(p.numel() for p in module.student.parameters()) for name, (module, _) in modules.items()
        },
        "flops_per_step": flops,
        "modes": {},
    }
    for mode in [m for m in MODES if m in args.modes]:
        if clock.over():
            result["modes"][mode] = {"skipped": f"time limit ({args.time_limit_s} s) reached"}
            continue
        clock.log(f"{key} {mode}: start")
        try:
            if mode == "compiled":
                graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
                for module, _ in modules.values():
                    if args.compile_backend == "inductor":
                        module.hparams.compile = True
                        module.configure_model()  # compile_blocks(student), compile_blocks(teacher)
                    else:  # what configure_model does, with another backend (tests: "eager", "aot_eager")
                        compile_blocks(module.student, backend=args.compile_backend)
                        compile_blocks(module.teacher, backend=args.compile_backend)
            result["modes"][mode] = time_mode(modules, batch, args, device, context)
            if mode == "compiled":
                result["modes"][mode]["unique_graphs"] = torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs
        except Exception as error:  # noqa: BLE001 (recorded; the other phases still run)
            result["modes"][mode] = {"error": f"{type(error).__name__}: {error}"[:2000]}
            traceback.print_exc()
        clock.log(f"{key} {mode}: done")
    eager, compiled = result["modes"].get("eager", {}), result["modes"].get("compiled", {})
    if all(name in eager and name in compiled for name in VARIANTS):  # ratio of medians: modes not interleaved
        result["speedup_compiled_vs_eager"] = {n: eager[n]["step_s"] / compiled[n]["step_s"] for n in VARIANTS}
    del modules, batch
    torch._dynamo.reset()  # compiled graphs hold on to nothing of this model any more
    device.free()
    return result


class _RepeatBatch(Dataset):
    def __init__(self, batch: dict, length: int) -> None:
        self.batch, self.length = batch, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        return dict(self.batch)


class RepeatedBatch(LightningDataModule):
    """The same collated CPU batch ``steps`` times; Lightning copies it to the device each step."""

    def __init__(self, batch: dict, steps: int) -> None:
        super().__init__()
        self.batch, self.steps = batch, steps
        self.batch_size = batch["global_crops"].shape[1]  # the lr scaling rule reads it

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_RepeatBatch(self.batch, self.steps), batch_size=None)


class StepTimer(Callback):
    """Wall time at the end of every batch (device synchronised); peak memory after the warm-up."""

    def __init__(self, device: Device, warmup: int) -> None:
        self.device, self.warmup = device, warmup
        self.ends: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.device.sync()
        self.ends.append(time.perf_counter())
        if len(self.ends) == self.warmup:
            self.device.reset_peak()


def distributed_step(strategy_name: str, spec: ModelSpec, batch_size: int, args, device: Device) -> dict:  # noqa: ANN001
    batch = make_batch(spec, batch_size, args.num_local_crops)
    module = build_module(spec, "paper", device)
    flops = module._count_flops_per_batch(batch)
    timer = StepTimer(device, args.warmup)
    strategy = "ddp" if strategy_name == "ddp" else BlockFSDPStrategy()
    steps = args.warmup + args.distributed_steps
    devices = [device.torch.index] if device.cuda else 1
    with tempfile.TemporaryDirectory() as root:
        trainer = Trainer(
            accelerator=device.torch.type, devices=devices, strategy=strategy, precision="bf16-mixed", max_steps=steps,
            max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, use_distributed_sampler=False,
            callbacks=[timer], default_root_dir=root,
        )  # fmt: skip
        trainer.fit(module, RepeatedBatch(batch, steps))
    if trainer.global_step != steps:
        raise RuntimeError(f"{strategy_name}: {trainer.global_step} optimizer steps instead of {steps}")
    intervals = np.diff(timer.ends[args.warmup - 1 :]).tolist()
    peak = device.peak_bytes()
    result = {
        "strategy": type(trainer.strategy).__name__,
        "world_size": trainer.world_size,
        "backend": dist.get_backend(),
        **rates(flops, batch_size, statistics.median(intervals), args.peak),
        "peak_memory_gib": None if peak is None else peak / GIB,
        "timed_steps": len(intervals),
    }
    del trainer, module
    device.free()
    return result


def measure_distributed(args: argparse.Namespace, device: Device, clock) -> dict:
    key = args.distributed_model
    spec, batch_size = args.specs[key], args.batch_sizes[key]
    result = {
        "model": spec.name,
        "specialization": "paper",
        "mode": "eager",
        "batch_size": batch_size,
        "crops": spec.crops(args.num_local_crops),
    }
    options = {"backend": "nccl", "device_id": device.torch} if device.cuda else {"backend": "gloo"}
    with tempfile.TemporaryDirectory() as store:  # Lightning finds the group initialised and uses it
        dist.init_process_group(init_method=f"file://{Path(store) / 'store'}", rank=0, world_size=1, **options)
        try:
            for name in args.distributed:
                if clock.over():
                    result[name] = {"skipped": f"time limit ({args.time_limit_s} s) reached"}
                    continue
                clock.log(f"{name} ({key}, paper): start")
                try:
                    result[name] = distributed_step(name, spec, batch_size, args, device)
                except Exception as error:  # noqa: BLE001
                    result[name] = {"error": f"{type(error).__name__}: {error}"[:2000]}
                    traceback.print_exc()
                device.free()  # out of the handler: its traceback no longer holds the module
                clock.log(f"{name}: done")
        finally:
            dist.destroy_process_group()
    return result


# ----------------------------------------------------------------------------- report
def targets_of(result: dict) -> dict[str, bool | None]:
    targets: dict[str, bool | None] = {}
    for key, model in result["models"].items():
        for mode in result["modes"]:
            ratio = model.get("modes", {}).get(mode, {}).get("time_ratio_paper_vs_vanilla")
            targets[f"{key}/{mode}/time_ratio_paper_vs_vanilla<={RATIO_TARGET}"] = (
                None if ratio is None else ratio <= RATIO_TARGET
            )
    compiled = result["models"].get("large14", {}).get("modes", {}).get("compiled", {})
    for name in VARIANTS:
        mfu = compiled.get(name, {}).get("mfu")
        targets[f"large14/compiled/{name}/mfu>={MFU_TARGET}"] = None if mfu is None else mfu >= MFU_TARGET
    ratios = [v for k, v in targets.items() if "time_ratio" in k]
    targets[f"time_ratio_paper_vs_vanilla<={RATIO_TARGET} in every mode"] = (
        all(ratios) if ratios and None not in ratios else None
    )
    return targets


class Clock:
    def __init__(self, limit_s: float) -> None:
        self.start, self.limit_s = time.perf_counter(), limit_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def over(self) -> bool:
        return self.elapsed() > self.limit_s

    def log(self, message: str) -> None:
        print(f"[gpu.py {self.elapsed():7.1f} s] {message}", file=sys.stderr, flush=True)


def batch_sizes(value: str | None, models: list[str], extra: str, specs: dict[str, ModelSpec]) -> dict[str, int]:
    """``64`` (all models), ``64,32`` (in the order of --models) or ``small16=64,large14=32``.

    ``extra``: the DDP/FSDP model, which need not be among ``models`` (its default, unless named).
    """
    sizes = {key: specs[key].batch_size for key in [*models, extra]}
    if not value:
        return sizes
    parts = value.split(",")
    if all("=" in part for part in parts):
        for part in parts:
            key, size = part.split("=")
            if key not in sizes:
                raise ValueError(f"--batch_size names {key!r}, not one of --models {models}")
            sizes[key] = int(size)
    elif len(parts) == 1:
        sizes = dict.fromkeys(sizes, int(parts[0]))
    elif len(parts) == len(models):
        sizes.update({key: int(size) for key, size in zip(models, parts, strict=True)})
    else:
        raise ValueError(f"--batch_size {value!r}: one size, one per model of --models, or name=size pairs")
    if min(sizes.values()) < 1:
        raise ValueError(f"--batch_size {value!r}: sizes must be positive")
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="small16,large14", help=f"comma-separated, of {sorted(MODELS)}")
    parser.add_argument(
        "--modes", default=None, help="comma-separated, of eager,compiled (default: both; --tiny: eager)"
    )
    parser.add_argument("--batch_size", default=None, help="per model: 64,32 or small16=64,large14=32 (default 64, 32)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 7; --tiny: 1)")
    parser.add_argument("--steps_per_round", type=int, default=None, help="steps per round (default 5; --tiny: 1)")
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed steps per configuration (default 3; --tiny 1)"
    )
    parser.add_argument("--num_local_crops", type=int, default=8)
    parser.add_argument("--distributed", default="ddp,fsdp", help="ddp,fsdp, either, or none")
    parser.add_argument(
        "--distributed_model", default=None, help="model of the DDP/FSDP steps (default: last of --models)"
    )
    parser.add_argument(
        "--distributed_steps", type=int, default=None, help="timed DDP/FSDP steps (default 5; --tiny: 2)"
    )
    parser.add_argument("--peak_tflops", type=float, default=None, help="dense bf16 peak of the device, TFLOP/s")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (with --tiny)")
    parser.add_argument("--tiny", action="store_true", help="toy-sized models (2 blocks, width 32): tests the path")
    parser.add_argument(
        "--compile_backend", default="inductor", help="torch.compile backend of the compiled mode (tests: eager)"
    )
    parser.add_argument("--time_limit_s", type=float, default=420.0, help="start no phase after this many seconds")
    args = parser.parse_args()
    clock = Clock(args.time_limit_s)

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(json.dumps({"benchmark": "gpu", "skipped": "CUDA is not available (run with --device cpu --tiny)"}))
        return
    if args.device == "cpu" and not args.tiny:
        parser.error("--device cpu runs the tiny models only: add --tiny")
    defaults = dict(modes="eager", rounds=1, steps_per_round=1, warmup=1, distributed_steps=2) if args.tiny else {}
    defaults = {**dict(modes="eager,compiled", rounds=7, steps_per_round=5, warmup=3, distributed_steps=5), **defaults}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.models = list(dict.fromkeys(m for m in args.models.split(",") if m))
    args.modes = [m for m in args.modes.split(",") if m]
    args.distributed = [] if args.distributed in ("", "none") else args.distributed.split(",")
    if unknown := set(args.models) - set(MODELS):
        parser.error(f"--models: unknown {sorted(unknown)}; known: {sorted(MODELS)}")
    if unknown := set(args.modes) - set(MODES):
        parser.error(f"--modes: unknown {sorted(unknown)}; known: {list(MODES)}")
    if unknown := set(args.distributed) - {"ddp", "fsdp"}:
        parser.error(f"--distributed: unknown {sorted(unknown)}; known: ddp, fsdp, none")
    if not args.models:
        parser.error("--models: give at least one model")
    for name in ("rounds", "steps_per_round", "warmup", "distributed_steps", "num_local_crops"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    args.distributed_model = args.distributed_model or args.models[-1]
    if args.distributed_model not in MODELS:
        parser.error(f"--distributed_model: unknown {args.distributed_model!r}; known: {sorted(MODELS)}")
    args.specs = {key: tiny(spec) if args.tiny else spec for key, spec in MODELS.items()}
    try:
        args.batch_sizes = batch_sizes(args.batch_size, args.models, args.distributed_model, args.specs)
    except ValueError as error:
        parser.error(str(error))

    malloc_tuning = keep_freed_memory()  # host memory, as `clsvit` does
    # The task logs through self.log, a no-op (with a warning) when no Trainer drives it.
    warnings.filterwarnings("ignore", message=r"You are trying to `self.log\(\)`")
    warnings.filterwarnings("ignore", message=r".*is switching to use `NO_SHARD`")
    warnings.filterwarnings("ignore", message=r"You have overridden `on_after_batch_transfer`")
    torch.manual_seed(0)
    device = Device(args.device)
    name = device.describe()
    args.peak = args.peak_tflops or (peak_tflops_of(name) if device.cuda else None)
    result = {
        "benchmark": "gpu",
        "device": str(device.torch),
        "device_name": name,
        "peak_bf16_tflops": args.peak,
        "peak_source": "--peak_tflops" if args.peak_tflops else ("table" if args.peak else None),
        "torch": torch.__version__,
        "malloc_tuning": malloc_tuning,
        "tiny": args.tiny,
        "precision": "bf16 autocast (as bf16-mixed)",
        "modes": args.modes,
        "compile_backend": args.compile_backend if "compiled" in args.modes else None,
        "rounds": args.rounds,
        "steps_per_round": args.steps_per_round,
        "warmup": args.warmup,
        "models": {},
    }
    for key in args.models:
        if clock.over():
            result["models"][key] = {"skipped": f"time limit ({args.time_limit_s} s) reached"}
            continue
        try:
            result["models"][key] = measure_model(key, args.specs[key], args.batch_sizes[key], args, device, clock)
        except Exception as error:  # noqa: BLE001 (e.g. out of memory while building)
            result["models"][key] = {"error": f"{type(error).__name__}: {error}"[:2000]}
            traceback.print_exc()
        device.free()
    if args.distributed:
        result["distributed"] = measure_distributed(args, device, clock)
    result["total_s"] = clock.elapsed()
    result["targets"] = targets_of(result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
