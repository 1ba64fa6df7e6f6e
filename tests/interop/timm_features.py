"""Load exported files with timm's ``create_model`` and save its features (run by ``test_timm_vit.py``).

``python tests/interop/timm_features.py JOBS.json``: each job is ``{"model_name", "kwargs",
"file", "images", "out"}``; ``create_model(model_name, pretrained=True, pretrained_cfg_overlay=
dict(file=file), **kwargs)`` then ``forward_features(torch.load(images, weights_only=True))`` is saved to ``out``.
Exits with 3 when timm is not installed. A separate process: the torchvision stand-in (see
``timm_import.py``) must not leak into the test session.
"""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.interop.timm_import import import_timm  # noqa: E402

NOT_INSTALLED = 3


def main(jobs_path: str) -> None:
    timm = import_timm()
    if timm is None:
        raise SystemExit(NOT_INSTALLED)
    for job in json.loads(Path(jobs_path).read_text()):
        overlay = dict(file=job["file"])
        model = timm.create_model(job["model_name"], pretrained=True, pretrained_cfg_overlay=overlay, **job["kwargs"])
        with torch.no_grad():
            torch.save(model.eval().forward_features(torch.load(job["images"], weights_only=True)), job["out"])
    print(f"timm {timm.__version__}")


if __name__ == "__main__":
    main(sys.argv[1])
