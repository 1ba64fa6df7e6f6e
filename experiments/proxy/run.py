"""CPU proxy of the paper, one command: vanilla vs `paper` vs norms + LayerScales tiny ViTs over 3 seeds.

    .venv/bin/python experiments/proxy/run.py [--seeds 0 1 2] [--out outputs/proxy]

Writes the synthetic scenes to <out>/data (if absent), then for every (specialization, seed): tiny
DINOv2 pretraining, k-NN, linear segmentation probe and the token-interaction analysis, cached in
<out>/<spec>_seed<k>/result.json (rerunning resumes). Report: <out>/report.md + PNGs.
The logic lives in clsvit_lightning/study/proxy.py (tested in tests/experiments/). Measured: 40.7 min
for the 9 runs on 2 CPU cores partly shared with other jobs; results and settings in RESULTS.md.
"""

import sys

from clsvit_lightning.study.proxy import run_proxy

if __name__ == "__main__":
    run_proxy(sys.argv[1:])
