"""CPU proxy of continued pretraining, one command: specialize a trained vanilla tiny ViT, continue, compare.

    .venv/bin/python experiments/continue/run.py [--seeds 0 1 2] [--out outputs/continue]

Pretrains the vanilla base (the proxy's tiny DINOv2 run) and exports its teacher without heads;
then, for every seed, continues it for the same steps as vanilla, `paper` and norms + LayerScales
(fresh heads, head warm-up, configs/pretrain/continue.yaml), each followed by k-NN, the linear
segmentation probe and the token analysis. Runs are cached under <out>/ (rerunning resumes; other
settings need another --out); the tables and plots are written into experiments/continue/RESULTS.md
between its markers.
The logic lives in clsvit_lightning/study/continuation.py (tested in tests/study/test_continuation.py).
"""

import sys

from clsvit_lightning.study.continuation import run_continuation

if __name__ == "__main__":
    run_continuation(sys.argv[1:])
