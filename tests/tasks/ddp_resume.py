"""Exact resume under DDP (2 CPU processes): run by ``tests/tasks/test_exact_resume.py`` through
``torchrun --standalone --nproc_per_node=2 -m tests.tasks.ddp_resume ROOT OUT``.

One process pair runs the uninterrupted DINOv2 run, the same run killed mid-epoch, and its resume
(each rank reads its shard of the data through Lightning's DistributedSamplerWrapper); rank 0
saves the losses and the final state of the reference and of the resumed run.
"""

import sys
from pathlib import Path

import torch

from tests.tasks import test_exact_resume as runs


def main(root: Path, out: Path) -> None:
    options = {"devices": 2, "strategy": "ddp", "batch_size": 4}
    _, reference, reference_losses = runs.run(out / "reference", root, 0, **options)
    _, _, first_losses = runs.run(out / "run", root, 0, kill_after=2, **options)
    _, resumed, resumed_losses = runs.run(out / "run", root, 0, resume=True, **options)
    if reference.global_rank == 0:
        torch.save(
            {
                "reference": (reference_losses, reference.lightning_module.state_dict()),
                "resumed": ({**first_losses, **resumed_losses}, resumed.lightning_module.state_dict()),
                "first_resumed_step": min(resumed_losses),
            },
            out / "ddp_resume.pt",
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
