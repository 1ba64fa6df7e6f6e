"""Dataset-level semantic segmentation metrics (the mmsegmentation / DINOv2 ADE20K protocol).

One ``[C, C]`` confusion matrix ``M`` (rows = target, columns = prediction) is summed over every
pixel of the validation set, pixels whose target is ``ignore_index`` (255) left out. From it, per
class ``c``:

* ``IoU_c = M[c, c] / (sum_j M[c, j] + sum_i M[i, c] - M[c, c])`` (intersection over union),
* ``Acc_c = M[c, c] / sum_j M[c, j]`` (recall of the class),

and ``mIoU`` = mean of ``IoU_c`` over the classes whose union is non-zero (present in the target or
the prediction somewhere in the dataset), ``mAcc`` = mean of ``Acc_c`` over the classes present in
the target, ``aAcc = trace(M) / sum(M)`` (pixel accuracy). Summing intersections and unions over
the dataset before dividing is what the protocol does; averaging per-image IoUs (torchmetrics'
``segmentation.MeanIoU``) gives another, non-comparable number.

:class:`SegmentationMetrics` is torchmetrics' ``MulticlassJaccardIndex(average="macro")``: its
state is the confusion matrix, summed across DDP ranks on ``compute``. ``compute`` returns the
mIoU; :meth:`SegmentationMetrics.compute_all` the whole table.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from torchmetrics.classification import MulticlassJaccardIndex

IGNORE_INDEX = 255


def scores_from_confusion_matrix(confmat: Tensor) -> dict[str, Tensor]:
    """All protocol numbers from a ``[C, C]`` confusion matrix (rows = target, columns = prediction).

    Per-class entries of absent classes are NaN (absent = zero union for IoU, zero target pixels
    for accuracy), so a table shows them as missing rather than as a score of 0.
    """
    confmat = confmat.double()
    intersection = confmat.diagonal()  # [C]
    target_pixels = confmat.sum(dim=1)  # [C]
    predicted_pixels = confmat.sum(dim=0)  # [C]
    union = target_pixels + predicted_pixels - intersection
    nan = torch.tensor(float("nan"), dtype=confmat.dtype, device=confmat.device)
    iou = torch.where(union > 0, intersection / union.clamp(min=1), nan)
    accuracy = torch.where(target_pixels > 0, intersection / target_pixels.clamp(min=1), nan)
    total = confmat.sum()
    return {
        "mIoU": iou.nanmean() if (union > 0).any() else torch.zeros((), dtype=confmat.dtype),
        "mAcc": accuracy.nanmean() if (target_pixels > 0).any() else torch.zeros((), dtype=confmat.dtype),
        "aAcc": intersection.sum() / total if total > 0 else torch.zeros((), dtype=confmat.dtype),
        "per_class_iou": iou,
        "per_class_accuracy": accuracy,
        "target_pixels": target_pixels,
        "present": union > 0,
    }


class SegmentationMetrics(MulticlassJaccardIndex):
    """mIoU over a dataset (``compute``), plus per-class IoU/accuracy, mAcc and aAcc (``compute_all``).

    ``update(preds, target)``: ``preds`` class indices ``[B, H, W]`` (or logits ``[B, C, H, W]``,
    argmax'd), ``target`` ``[B, H, W]`` with ``ignore_index`` for pixels that do not count.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, validate_args: bool = True) -> None:
        if num_classes < 1:
            raise ValueError(f"SegmentationMetrics: num_classes must be >= 1, got {num_classes}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(
                f"SegmentationMetrics: ignore_index {ignore_index} is a class id (num_classes={num_classes})"
            )
        super().__init__(num_classes, average="macro", ignore_index=ignore_index, validate_args=validate_args)

    def compute_all(self) -> dict[str, Tensor]:
        """:func:`scores_from_confusion_matrix` of the confusion matrix summed over all ranks."""
        with self.sync_context(should_sync=self._to_sync, should_unsync=self._should_unsync):
            return scores_from_confusion_matrix(self.confmat)


def per_class_rows(scores: dict[str, Tensor], class_names: Sequence[str] | None = None) -> list[dict[str, object]]:
    """One row per class: id, name, IoU, accuracy (NaN when absent), target pixels, presence."""
    num_classes = len(scores["per_class_iou"])
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"class_names has {len(class_names)} entries but there are {num_classes} classes")
    rows = []
    for index in range(num_classes):
        rows.append(
            {
                "class_id": index,
                "name": class_names[index] if class_names is not None else str(index),
                "iou": float(scores["per_class_iou"][index]),
                "accuracy": float(scores["per_class_accuracy"][index]),
                "target_pixels": int(scores["target_pixels"][index]),
                "present": bool(scores["present"][index]),
            }
        )
    return rows


def write_per_class_csv(rows: list[dict[str, object]], path: str | Path) -> Path:
    """The per-class table as CSV (absent classes have empty IoU/accuracy cells)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["class_id"])
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if isinstance(v, float) and v != v else v) for k, v in row.items()})
    return path


def format_per_class_table(rows: list[dict[str, object]]) -> str:
    """A fixed-width text table for the console (``clsvit validate``)."""
    lines = [f"{'id':>4}  {'class':<24} {'IoU':>7} {'Acc':>7} {'pixels':>12}"]
    for row in rows:
        iou, acc = (f"{100 * row[k]:7.2f}" if row[k] == row[k] else f"{'-':>7}" for k in ("iou", "accuracy"))
        lines.append(f"{row['class_id']:>4}  {str(row['name'])[:24]:<24} {iou} {acc} {row['target_pixels']:>12}")
    return "\n".join(lines)
