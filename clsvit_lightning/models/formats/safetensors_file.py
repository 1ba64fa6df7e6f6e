"""Read and write ``.safetensors`` files with torch alone (no ``safetensors`` package needed).

The format (https://github.com/huggingface/safetensors, "Format"): an 8-byte little-endian header
length ``n``; ``n`` bytes of JSON mapping each tensor name to ``{"dtype", "shape", "data_offsets":
[begin, end]}`` (offsets into the data that follows), plus an optional ``"__metadata__"`` of
string to string; then the raw little-endian tensor bytes. Files written here load with
``safetensors.torch.load_file`` and the other way round (``tests/interop`` checks both).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from clsvit_lightning.errors import ConfigError

_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}  # fmt: skip
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}
_MAX_HEADER = 100_000_000  # the reference implementation's limit; a larger value means a foreign file


class SafetensorsReadError(ConfigError):
    """The file is not a readable ``.safetensors`` file; the message names it and says why."""


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of a ``.safetensors`` file; each tensor owns its memory."""
    path = Path(path)
    with open(path, "rb") as file:
        data = file.read()
    if len(data) < 8:
        raise SafetensorsReadError(f"{path} is truncated or not a .safetensors file ({len(data)} bytes)")
    header_size = int.from_bytes(data[:8], "little")
    if header_size > min(_MAX_HEADER, len(data) - 8):
        raise SafetensorsReadError(f"{path} is truncated or not a .safetensors file (bad header length)")
    try:
        header = json.loads(data[8 : 8 + header_size])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SafetensorsReadError(f"{path} is not a .safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise SafetensorsReadError(f"{path} is not a .safetensors file (its header is not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    body = memoryview(data)[8 + header_size :]
    tensors = {}
    for name, entry in header.items():
        try:
            dtype = _DTYPES[entry["dtype"]]
            begin, end = entry["data_offsets"]
            shape = [int(size) for size in entry["shape"]]
        except (KeyError, TypeError, ValueError):
            raise SafetensorsReadError(
                f"{path}: tensor {name!r} has dtype {entry.get('dtype') if isinstance(entry, dict) else entry!r}; "
                f"expected one of {sorted(_DTYPES)} with a shape and data offsets"
            ) from None
        count = end - begin
        if not 0 <= begin <= end <= len(body) or count != _numel(shape) * dtype.itemsize:
            raise SafetensorsReadError(f"{path} is truncated or corrupt (tensor {name!r} lies outside the data)")
        flat = torch.frombuffer(bytearray(body[begin:end]), dtype=torch.uint8) if count else torch.empty(0)
        tensor = flat.view(dtype) if count else torch.empty(0, dtype=dtype)
        if sys.byteorder != "little" and dtype.itemsize > 1:
            tensor = tensor.view(torch.uint8).view(-1, dtype.itemsize).flip(1).contiguous().view(dtype)
        tensors[name] = tensor.reshape(shape)
    return tensors, {str(k): str(v) for k, v in metadata.items()}


def write_safetensors(
    path: str | os.PathLike, tensors: Mapping[str, Tensor], metadata: Mapping[str, str] | None = None
) -> None:
    """Write ``tensors`` (any device, dtypes of the table above) and string ``metadata``."""
    for name, tensor in tensors.items():
        if tensor.dtype not in _NAMES:
            raise ConfigError(f"cannot write tensor {name!r} of dtype {tensor.dtype} to a .safetensors file")
    # Widest dtypes first, as the reference writer does, so that every tensor stays aligned.
    names = sorted(tensors, key=lambda n: (-tensors[n].dtype.itemsize, n))
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset, blobs = 0, []
    for name in names:
        tensor = tensors[name].detach().to("cpu").contiguous()
        blob = tensor.reshape(-1).view(torch.uint8) if tensor.numel() else torch.empty(0, dtype=torch.uint8)
        if sys.byteorder != "little" and tensor.dtype.itemsize > 1:
            blob = blob.view(-1, tensor.dtype.itemsize).flip(1).reshape(-1)
        shape = list(tensor.shape)
        header[name] = {"dtype": _NAMES[tensor.dtype], "shape": shape, "data_offsets": [offset, offset + blob.numel()]}
        offset += blob.numel()
        blobs.append(blob)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # pad with spaces so the data starts 8-byte aligned
    with open(path, "wb") as file:
        file.write(len(encoded).to_bytes(8, "little"))
        file.write(encoded)
        for blob in blobs:
            file.write(memoryview(blob.numpy()))


def _numel(shape: list[int]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count
