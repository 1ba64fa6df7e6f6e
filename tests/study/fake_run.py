"""Stands in for `clsvit fit` in the sweep-runner test: writes a CSV logger file and a results file.

``--variant=<name>`` picks (overhead %, mIoU, k-NN) from VARIANTS; ``fail`` exits with status 3.
"""

import json
import sys
from pathlib import Path

VARIANTS = {"a": (0.0, 30.0, 50.0), "b": (5.0, 35.0, 51.0), "c": (5.0, 32.0, 52.0), "d": (10.0, 34.0, 53.0)}

if __name__ == "__main__":
    args = dict(item[2:].split("=", 1) for item in sys.argv[1:] if item.startswith("--") and "=" in item)
    if args["variant"] == "fail":
        sys.exit(3)
    overhead, miou, knn = VARIANTS[args["variant"]]
    root = Path(args["trainer.default_root_dir"])
    logs = root / "lightning_logs" / "version_0"
    logs.mkdir(parents=True)
    # Two rows: the collector keeps the last value of each column.
    rows = ["epoch,step,val/mIoU,online_knn/k20_top1", f"0,1,{miou - 10},", f"1,2,{miou},{knn}"]
    (logs / "metrics.csv").write_text("\n".join(rows) + "\n")
    (root / "results.json").write_text(json.dumps({"metrics": {"backbone/params_overhead_pct": overhead}}))
