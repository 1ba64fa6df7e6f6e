"""Global RNG states (torch, numpy, python) in a checkpoint, in a ``weights_only``-loadable form.

Lightning does not checkpoint the global generators; augmentations drawn in the main process,
mixup/cutmix and iBOT masks use them, so an exactly resumed run needs them back.
"""

from __future__ import annotations

import ast
import random
from typing import Any

import numpy as np
import torch

KEY = "rng_states"


def save_rng_states(checkpoint: dict[str, Any]) -> None:
    numpy_state = np.random.get_state()
    checkpoint[KEY] = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
        "numpy_pos": int(numpy_state[2]),
        "python": repr(random.getstate()),  # a tuple of ints: safe to read back with literal_eval
    }


def restore_rng_states(checkpoint: dict[str, Any]) -> None:
    states = checkpoint.get(KEY)
    if states is None:
        return
    torch.set_rng_state(states["torch"])
    np.random.set_state(("MT19937", states["numpy_keys"].numpy().astype(np.uint32), states["numpy_pos"], 0, 0.0))
    random.setstate(ast.literal_eval(states["python"]))
