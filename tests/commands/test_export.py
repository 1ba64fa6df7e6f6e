"""``clsvit export`` on a file that is not a pretraining checkpoint: one line naming it, no traceback."""

import pytest
import torch

from clsvit_lightning.cli import run


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        (b"", "is an empty file"),
        (b"\x80\x02garbage", "is truncated or not a torch checkpoint (UnpicklingError)"),
        ({"model": {"cls_token": torch.zeros(1, 1, 4)}}, "holds no teacher.backbone.* weights; expected a DINOv2"),
    ],
)
def test_export_of_a_bad_checkpoint_is_one_line_naming_it(tmp_path, content, message):
    path = tmp_path / "run.ckpt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(SystemExit) as exit_:
        run(["export", "--ckpt", str(path), "--out", str(tmp_path / "teacher.pth")])
    text = str(exit_.value.code)
    assert text.startswith(f"clsvit export: --ckpt {path} ")
    assert message in text and "weights_only=False" not in text and "\n" not in text
