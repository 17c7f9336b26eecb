"""The streaming safetensors writer behind the GGUF conversion writes exactly the bytes safetensors itself writes
(so a model's recorded weights sha256 does not depend on the converter), whatever order tensors arrive in, and
refuses to finish a file with a tensor missing or mis-shaped."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save

from lessdb.errors import LessdbError
from lessdb.models.gguf_convert import SafetensorsStreamWriter


def _tensors():
    g = torch.Generator().manual_seed(0)
    return {"model.layers.1.w": torch.randn(3, 5, generator=g), "model.embed": torch.randn(7, 4, generator=g),
            "a.half": torch.randn(6, generator=g).to(torch.float16), "b.bf16": torch.randn(2, 3, generator=g).bfloat16(),
            "ids": torch.arange(5, dtype=torch.int64), "z.norm": torch.randn(9, generator=g),
            "count": torch.tensor([3], dtype=torch.int32), "scalar64": torch.randn(4, generator=g).double(),
            "empty": torch.zeros(0, 4)}


@pytest.mark.parametrize("metadata", [{"format": "pt"}, None])
def test_stream_writer_bytes_equal_safetensors(tmp_path, metadata):
    tensors = _tensors()
    path = tmp_path / "m.safetensors"
    writer = SafetensorsStreamWriter(path, {n: (t.dtype, tuple(t.shape)) for n, t in tensors.items()}, metadata)
    for name in reversed(sorted(tensors)):   # any arrival order
        writer.write(name, tensors[name])
    writer.close()
    assert path.read_bytes() == save(tensors, metadata=metadata)
    back = load_file(str(path))
    assert all(torch.equal(back[n], t) for n, t in tensors.items())


def test_stream_writer_refuses_missing_or_wrong_tensors(tmp_path):
    tensors = _tensors()
    writer = SafetensorsStreamWriter(tmp_path / "m.safetensors", {n: (t.dtype, tuple(t.shape)) for n, t in tensors.items()})
    with pytest.raises(LessdbError, match="model.embed"):
        writer.write("model.embed", tensors["model.embed"].T.contiguous())
    with pytest.raises(LessdbError, match="model.embed"):
        writer.write("model.embed", tensors["model.embed"].double())
    writer.write("ids", tensors["ids"])
    with pytest.raises(LessdbError, match="incomplete"):
        writer.close()
