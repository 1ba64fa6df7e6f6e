"""``.safetensors`` read and written with torch alone, checked against the ``safetensors`` package."""

import pytest
import torch

from clsvit_lightning.models import from_pretrained, load_pretrained
from clsvit_lightning.models.formats import export_backbone, read_safetensors, write_safetensors
from clsvit_lightning.models.formats.safetensors_file import SafetensorsReadError
from tests.interop.backbones import features, random_backbone

TENSORS = {
    "f32": torch.randn(3, 5),
    "bf16": torch.randn(7).to(torch.bfloat16),  # odd sizes: later tensors must stay aligned
    "f16": torch.randn(2, 3).half(),
    "i64": torch.arange(4),
    "flag": torch.tensor([True, False, True]),
    "scalar": torch.tensor(2.5),
    "empty": torch.zeros(1, 0, 4),
    "strided": torch.randn(4, 6).t(),  # written contiguous
}


def test_our_file_reads_with_the_safetensors_package_and_back(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    path = tmp_path / "ours.safetensors"
    write_safetensors(path, TENSORS, {"note": "hello"})
    theirs = safetensors_torch.load_file(path)
    assert set(theirs) == set(TENSORS)
    for name, tensor in TENSORS.items():
        assert theirs[name].dtype == tensor.dtype and torch.equal(theirs[name], tensor), name
    from safetensors import safe_open

    with safe_open(path, "pt") as file:
        assert file.metadata() == {"note": "hello"}


def test_their_file_reads_here(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    path = tmp_path / "theirs.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in TENSORS.items()}, path, metadata={"format": "pt"})
    tensors, metadata = read_safetensors(path)
    assert metadata == {"format": "pt"}
    for name, tensor in TENSORS.items():
        assert tensors[name].dtype == tensor.dtype and torch.equal(tensors[name], tensor), name


def test_a_specialized_backbone_keeps_its_architecture_in_the_metadata(tmp_path):
    model = random_backbone(specialization="paper", num_registers=2)
    images = torch.randn(2, 3, 42, 42)
    path = tmp_path / "paper.safetensors"
    export_backbone(model, path, "safetensors")
    restored = from_pretrained(path)
    assert restored.config == model.config and not restored.training
    assert torch.equal(features(restored, images), features(model, images))
    target = random_backbone(seed=1, specialization="paper", num_registers=2)
    load_pretrained(target, path)  # load_pretrained reads the same file into a model you built
    assert torch.equal(features(target, images), features(model, images))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x05\x00", "is truncated or not a .safetensors file"),
        (b"\xff" * 8 + b"{}", "bad header length"),
        ((10).to_bytes(8, "little") + b"not json!!", "its header is not JSON"),
        ((2).to_bytes(8, "little") + b"[]", "its header is not a JSON object"),
    ],
)
def test_a_corrupt_file_is_named_with_what_is_wrong(tmp_path, content, message):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(content)
    with pytest.raises(SafetensorsReadError, match=message) as error:
        read_safetensors(path)
    assert str(path) in str(error.value)


def test_a_truncated_tensor_is_named(tmp_path):
    path = tmp_path / "cut.safetensors"
    write_safetensors(path, {"weight": torch.randn(16)})
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(SafetensorsReadError, match=r"truncated or corrupt \(tensor 'weight'"):
        read_safetensors(path)
