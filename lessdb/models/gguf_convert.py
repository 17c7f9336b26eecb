"""GGUF -> plain safetensors, one tensor at a time.

The previous conversion loaded the de-quantized model through transformers, built a second plain model, copied
the state dict across and serialised it (safetensors' writer copies every tensor into bytes first): about four
copies of the weights at once. Here the safetensors header is computed up front from the model's shapes (a
model built on the meta device: no memory), then each GGUF tensor is de-quantized, converted by transformers' own
per-architecture tensor processor (e.g. Llama's q/k un-permutation), written at its offset and dropped. Peak
memory is about one tensor (the embedding: 49,152 × 576 × 4 B = 113 MB for SmolLM2) on top of the mapped GGUF.

The file is byte-identical to what `safetensors.torch.save_file(state_dict, metadata={"format": "pt"})` (and so
`save_pretrained`) writes for the same tensors, so the recorded weights sha256 does not depend on the converter
(tests/test_gguf_convert.py checks the writer against safetensors itself).
"""
from __future__ import annotations

import copy
import json
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ..errors import LessdbError

# safetensors' dtype names; its writer orders tensors by dtype (larger alignment first), then by name
_ST_DTYPES = {torch.float64: ("F64", 8), torch.float32: ("F32", 4), torch.bfloat16: ("BF16", 2),
              torch.float16: ("F16", 2), torch.int64: ("I64", 8), torch.int32: ("I32", 4)}
_ST_ORDER = ["F16", "BF16", "I32", "F32", "F64", "I64"]   # ascending, as safetensors' Dtype enum sorts them


class SafetensorsStreamWriter:
    """Writes a safetensors file whose tensors are known by name, dtype and shape in advance, in any order."""

    def __init__(self, path: Path, specs: dict[str, tuple[torch.dtype, tuple[int, ...]]],
                 metadata: dict[str, str] | None = None):
        order = sorted(specs, key=lambda n: (-_ST_ORDER.index(_ST_DTYPES[specs[n][0]][0]), n))
        header: dict = {"__metadata__": dict(metadata)} if metadata else {}
        self.offsets: dict[str, tuple[int, int]] = {}
        pos = 0
        for name in order:
            dtype, shape = specs[name]
            code, size = _ST_DTYPES[dtype]
            nbytes = int(np.prod(shape, dtype=np.int64)) * size
            header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [pos, pos + nbytes]}
            self.offsets[name] = (pos, pos + nbytes)
            pos += nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * ((8 - len(raw) % 8) % 8)
        self.specs, self.data_start, self.written = specs, 8 + len(raw), set()
        self.fh = open(path, "wb")
        self.fh.write(len(raw).to_bytes(8, "little") + raw)
        self.fh.truncate(self.data_start + pos)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        dtype, shape = self.specs[name]
        if tensor.dtype != dtype or tuple(tensor.shape) != tuple(shape):
            raise LessdbError(f"tensor {name}: got {tensor.dtype} {tuple(tensor.shape)}, expected {dtype} {shape}")
        start, _ = self.offsets[name]
        self.fh.seek(self.data_start + start)
        self.fh.write(tensor.contiguous().view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
        self.written.add(name)

    def close(self) -> None:
        """Close the file; a LessdbError if any announced tensor was never written."""
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        missing = sorted(set(self.specs) - self.written)
        if missing:
            raise LessdbError(f"safetensors file left incomplete: no data for {missing[:3]}")


@contextmanager
def _metadata_parsed_once():
    """transformers parses the GGUF's metadata (49K tokens and merges, element by element) once for the
    tokenizer, once for the config, and the tensor processor needs it again: ~15 s each under load here. Within
    this block `load_gguf_checkpoint(..., return_tensors=False)` is parsed once per file and handed out as deep
    copies (callers modify it). transformers imports it inside its functions, which is what makes this work."""
    from transformers import modeling_gguf_pytorch_utils as mod

    original, cache = mod.load_gguf_checkpoint, {}

    def cached(path, return_tensors=False, **kwargs):
        if return_tensors or kwargs.get("model_to_load") is not None:
            return original(path, return_tensors=return_tensors, **kwargs)
        key = os.fspath(path)
        if key not in cache:
            cache[key] = original(path, return_tensors=False, **kwargs)
        return copy.deepcopy(cache[key])

    mod.load_gguf_checkpoint = cached
    try:
        yield
    finally:
        mod.load_gguf_checkpoint = original


def convert_gguf_streaming(gguf: Path, out_dir: Path) -> None:
    """Write config, generation config, tokenizer and model.safetensors of the GGUF's model into `out_dir`."""
    with _metadata_parsed_once():
        _convert(gguf, out_dir)


def _convert(gguf: Path, out_dir: Path) -> None:
    import gguf as gguf_mod
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    from transformers import modeling_gguf_pytorch_utils as gguf_utils
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor, get_gguf_hf_weights_map

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config_dict = config.to_dict()
    config_dict.pop("quantization_config", None)
    config = type(config).from_dict(config_dict)
    config.dtype = torch.float32
    config.architectures = config.architectures or [AutoModelForCausalLM._model_mapping[type(config)].__name__]
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    specs = {n: (t.dtype, tuple(t.shape)) for n, t in skeleton.state_dict().items() if n not in tied}

    reader = gguf_mod.GGUFReader(str(gguf))
    parsed = gguf_utils.load_gguf_checkpoint(str(gguf), return_tensors=False)
    architecture = gguf_utils.read_field(reader, "general.architecture")[0]
    processor = TENSOR_PROCESSORS.get(architecture, TensorProcessor)(config=parsed.get("config", {}))
    name_map = get_gguf_hf_weights_map(skeleton, processor)
    del skeleton

    writer = SafetensorsStreamWriter(out_dir / "model.safetensors", specs, {"format": "pt"})
    unexpected = []
    try:
        for tensor in reader.tensors:
            weights = gguf_mod.dequantize(tensor.data, tensor.tensor_type)
            result = processor.process(weights=weights, name=tensor.name, tensor_key_mapping=name_map,
                                       parsed_parameters=parsed)
            hf_name = name_map.get(result.name)
            if hf_name is None or hf_name in tied:
                continue
            if hf_name not in specs:
                unexpected.append(hf_name)
                continue
            writer.write(hf_name, torch.from_numpy(np.array(result.weights, dtype=np.float32, order="C")))
            del weights, result
    except BaseException:
        writer.fh.close()   # the caller removes the half-written directory
        raise
    if unexpected:
        writer.fh.close()
        raise LessdbError(f"{gguf}: converting the GGUF left weights unmatched (unexpected {unexpected[:3]})")
    try:
        writer.close()
    except LessdbError as exc:
        raise LessdbError(f"{gguf}: converting the GGUF left weights unmatched ({exc})") from None
    config.save_pretrained(str(out_dir))
    GenerationConfig.from_model_config(config).save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
