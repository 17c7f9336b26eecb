"""The GPU code paths that a CPU can check (issue 25), and bench/gpu_check.py's CPU run.

- lessdb's compute modules import, and the tiny model loads, with LanceDB, DuckDB, pyarrow, rank-bm25 and Ray
  absent (a GPU machine may have only torch, transformers, peft and numpy);
- `python -m bench.gpu_check --device cpu --quick` runs in that environment and reports every figure (tests run
  the benchmark as a user does and never import bench/: its math is lessdb's, checked here);
- bf16 features agree with fp32 within a stated tolerance; under CPU autocast the per-example gradients, the Adam
  direction, the sketch and the norms are float32 while the model's matmuls run in bf16;
- a featurize batch does no per-example work and a fixed number of host reads whatever its size;
- on a GPU batches are bounded by their count only (the 512-token cap is the CPU's), and the host↔device copies
  are one each way.
"""
from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TESTS = Path(__file__).resolve().parent
# bf16 vs fp32, tiny model, CPU autocast: measured cosine ≥ 0.9999 (min over 54 BBH candidates); stated tolerance:
COSINE_TOL, SPEARMAN_TOL = 0.999, 0.99


def _without_storage(code: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter where the storage/cluster packages look uninstalled."""
    prelude = f"import sys; sys.path.insert(0, {str(TESTS)!r}); import without_storage\n"
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})


def test_compute_modules_import_and_run_without_storage_packages():
    proc = _without_storage("""
import importlib, importlib.util
for mod in ("lancedb", "duckdb", "pyarrow", "rank_bm25", "ray"):
    assert importlib.util.find_spec(mod) is None, mod
    try:
        importlib.import_module(mod)
    except ModuleNotFoundError:
        pass
    else:
        raise AssertionError(mod + " imported")
import torch
from lessdb.models import architectures, batching, completion_loss, tokenization
from lessdb.runs import checkpoints, trainer as training
from lessdb.selection import scoring
from lessdb.featurize import adam, compute, engine, per_example_grads, precision, sketch
from lessdb.models.loading import load_base_model
loaded = load_base_model(None, "tiny", device="cpu", record=False)
from lessdb.runs.config import LoraSettings
model = training.build_lora_model(loaded.model, LoraSettings(r=4, alpha=16), seed=0).eval()
params = per_example_grads.lora_params(model)
eng = engine.FeatureEngine(model, params, adam.GradTransform("sgd", params),
                           sketch.make_sketch("countsketch", [p.numel for p in params], 32, 0))
enc = tokenization.encode_conversation(loaded.tokenizer, [{"role": "user", "content": "hi"},
                                                          {"role": "assistant", "content": "hello"}], 64)
ok, vecs, norms = eng.features(tokenization.collate([enc], tokenization.pad_token_id(loaded.tokenizer))).to_host()
assert ok.all() and vecs.shape == (1, 32) and abs(float((vecs ** 2).sum()) - 1) < 1e-5
import sys
print("LOADED", sorted(m for m in sys.modules if m.split(".")[0] in ("lancedb", "lance", "duckdb", "pyarrow", "ray")))
""")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "LOADED []" in proc.stdout


def test_gpu_check_quick_on_cpu_without_storage_packages(tmp_path):
    """The device check's own code path, on the tiny model: every figure present and sane."""
    out = tmp_path / "gpu_check.json"
    proc = _without_storage(f"""
import runpy
sys.argv = ["bench.gpu_check", "--device", "cpu", "--quick", "--models", "tiny", "--threads", "1",
            "--min-seconds", "0.05", "--out", {str(out)!r}]
runpy.run_module("bench.gpu_check", run_name="__main__", alter_sys=True)
""")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    report = json.loads(out.read_text())
    assert proc.stdout.lstrip().startswith("lessdb GPU check") and '"schema": "lessdb-gpu-check/1"' in proc.stdout
    env = report["environment"]
    assert {"lancedb", "duckdb", "pyarrow", "ray"} <= set(env["absent_optional_modules"])
    assert env["device"] == "cpu" and env["torch"] == torch.__version__
    tiny = report["models"]["tiny"]
    assert tiny["lora"]["r"] == 128 and tiny["dim"] == 8192 and tiny["lora"]["P"] > 0
    assert tiny["warmup"]["tokens_per_s"] > 0 and tiny["warmup"]["weights_dtype"] == "float32"
    assert {p["compute"] for p in tiny["points"]} == {"bfloat16", "float32"}   # no TF32 variant off CUDA
    for p in tiny["points"]:
        assert p["featurize"]["tokens_per_s"] > 0 and p["floor"]["tokens_per_s"] > 0
        assert p["featurize_over_floor"] == round(p["featurize"]["tokens_per_s"] / p["floor"]["tokens_per_s"], 3)
        assert 0 <= p["padding_share"] < 0.5 and p["featurize"]["peak_gb"] is None   # GPU memory only on a GPU
    agree = tiny["agreement"]
    assert agree["candidates"] == 54 and agree["validation"] == 27 and "BBH" in agree["source"]
    bf16 = agree["vs_float32"]["bfloat16"]
    assert bf16["vector_cosine"]["min"] >= COSINE_TOL and bf16["score_spearman"] >= SPEARMAN_TOL
    assert 0 < tiny["host_syncs_per_batch"]["count"] <= 4
    assert tiny["profile_bf16"] and all(r["ms"] >= 0 for r in tiny["profile_bf16"])
    assert report["verdicts"]["tiny_bf16_spearman"]["met"] is True
    assert "smollm2-135m_bf16_tokens_per_s_best" not in report["verdicts"]   # not measured: never judged
    assert report["elapsed_s"] < report["budget_s"] and report["skipped"] == []


def test_gpu_check_math_against_independent_computations():
    """The arithmetic the GPU check reports with (lessdb's, so tests need not import bench/): Spearman against
    scipy's (ties included), and the FLOPs per token against the model's own weight count."""
    from scipy.stats import spearmanr

    from lessdb.models.architectures import architecture_config, flops_per_token, random_causal_lm
    from lessdb.selection.scoring import spearman

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(size=50)
    assert spearman(a, a + 0.1 * b) == pytest.approx(spearmanr(a, a + 0.1 * b).statistic, abs=1e-12)
    ta, tb = rng.integers(0, 5, size=40), rng.integers(0, 3, size=40)   # many ties: average ranks, as scipy
    assert spearman(ta, tb) == pytest.approx(spearmanr(ta, tb).statistic, abs=1e-12)
    assert np.isnan(spearman(np.ones(5), a[:5])) and np.isnan(spearman([1.0, np.nan, 2.0], [1.0, 2.0, 3.0]))
    # 4 FLOPs per body weight per token: the formula's body term equals 4 × the model's own linear weights
    cfg = architecture_config("tiny", num_hidden_layers=3)
    model = random_causal_lm(cfg)
    body = sum(p.numel() for n, p in model.named_parameters() if n.startswith("model.layers.") and p.ndim == 2)
    no_attention = flops_per_token(cfg, 0, 0, 0.0)
    assert no_attention == 4 * body
    assert flops_per_token(cfg, 0, 10, 0.5) - no_attention == 2 * 10 + 2 * 2 * cfg.vocab_size * cfg.hidden_size * 0.5


def _tiny_engines(grad_kind: str = "adam"):
    """A tiny LoRA model after two real AdamW steps, and its FeatureEngine at fp32 and at CPU-bf16 (the
    precision rule of lessdb.featurize.precision), sharing the sketch."""
    from lessdb.runs.config import LoraSettings
    from lessdb.featurize.adam import AdamState, GradTransform
    from lessdb.featurize.engine import FeatureEngine
    from lessdb.featurize.per_example_grads import lora_params
    from lessdb.featurize.precision import weights_and_autocast
    from lessdb.featurize.sketch import make_sketch
    from lessdb.models.tiny import tiny_llama
    from lessdb.runs.trainer import build_lora_model

    model = build_lora_model(tiny_llama(0), LoraSettings(r=8, alpha=32, dropout=0.0), seed=0)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = _batch(8, seed=1)
    for _ in range(2):
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    params = lora_params(model)
    named = dict(model.named_parameters())
    state = AdamState({p.name: opt.state[named[p.name]]["exp_avg"] for p in params},
                      {p.name: opt.state[named[p.name]]["exp_avg_sq"] for p in params}, 2, 0.9, 0.999, 1e-8)
    sketch = make_sketch("countsketch", [p.numel for p in params], 512, 0)
    engines = {}
    for compute in ("float32", "bfloat16"):
        weights, autocast = weights_and_autocast("cpu", compute)
        assert weights == torch.float32       # CPU: fp32 weights, bf16 only through autocast
        engines[compute] = FeatureEngine(model, params, GradTransform(grad_kind, params, state), sketch, autocast)
    return model, engines


def _batch(n: int, seed: int, length: int = 24):
    from lessdb.models.tokenization import IGNORE_INDEX, EncodedExample, collate

    g = torch.Generator().manual_seed(seed)
    examples = []
    for i in range(n):
        size = length - (i % 5)
        ids = torch.randint(4, 260, (size,), generator=g).tolist()
        examples.append(EncodedExample(ids, [IGNORE_INDEX] * (size // 2) + ids[size // 2:], size // 2,
                                       size - size // 2, False, size))
    return collate(examples, 0)


def test_bf16_features_agree_with_fp32_within_tolerance():
    """Stated tolerance (tiny model, CPU autocast): every vector's cosine with its fp32 twin ≥ 0.999 and the
    Spearman correlation of LESS-style scores against 6 fixed validation vectors ≥ 0.99. The bf16 vectors are
    not the fp32 ones (autocast really ran)."""
    from scipy.stats import spearmanr

    _, engines = _tiny_engines()
    cands, vals = _batch(40, seed=2), _batch(6, seed=3)
    got = {c: (e.features(cands).to_host(), e.features(vals).to_host()) for c, e in engines.items()}
    (ok32, v32, n32), (okv32, val32, _) = got["float32"]
    (ok16, v16, n16), (okv16, val16, _) = got["bfloat16"]
    assert ok32.all() and ok16.all() and okv32.all() and okv16.all()
    cos = (v32 * v16).sum(axis=1)
    assert cos.min() >= COSINE_TOL, cos.min()
    assert not np.array_equal(v32, v16)
    assert np.allclose(n16, n32, rtol=1e-2)
    s32, s16 = (v32 @ val32.T).mean(axis=1), (v16 @ val16.T).mean(axis=1)
    assert spearmanr(s32, s16).statistic >= SPEARMAN_TOL


def test_cpu_bf16_autocast_keeps_gradients_adam_sketch_and_norms_fp32(monkeypatch):
    from lessdb.featurize import adam, sketch
    from lessdb.featurize.engine import FeatureEngine

    model, engines = _tiny_engines()
    seen = Counter()
    orig_apply, orig_add = adam.AdamSlice.apply, sketch.CountSketch.add

    def apply(self, g, den=None):
        out = orig_apply(self, g, den)
        seen[("adam in", g.dtype)] += 1
        seen[("adam out", out.dtype)] += 1
        seen[("adam state", self.M.dtype, self.V.dtype)] += 1
        return out

    def add(self, out, index, x):
        seen[("sketch in", x.dtype, out.dtype)] += 1
        return orig_add(self, out, index, x)

    monkeypatch.setattr(adam.AdamSlice, "apply", apply)
    monkeypatch.setattr(sketch.CountSketch, "add", add)
    base_q = next(m for n, m in model.named_modules() if n.endswith("self_attn.q_proj.base_layer"))
    handle = base_q.register_forward_hook(lambda _m, _i, out: seen.update([("base matmul", out.dtype)]))
    grads = []
    orig_on_grad = FeatureEngine._on_grad
    monkeypatch.setattr(FeatureEngine, "_on_grad", lambda self, i, g: (grads.append(g.dtype), orig_on_grad(self, i, g)))
    try:
        out = engines["bfloat16"].features(_batch(4, seed=5))
    finally:
        handle.remove()
    n_mod = len(engines["bfloat16"].params)
    assert seen[("base matmul", torch.bfloat16)] == 1          # the model's GEMMs ran in bf16 ...
    assert grads == [torch.float32] * n_mod                    # ... the per-example gradients are fp32
    assert seen[("adam in", torch.float32)] == seen[("adam out", torch.float32)] == n_mod
    assert seen[("adam state", torch.float32, torch.float32)] == n_mod
    assert seen[("sketch in", torch.float32, torch.float32)] == n_mod
    assert out.vectors.dtype == out.norms.dtype == torch.float32 and out.losses.dtype == torch.float32
    assert sum(seen.values()) == 1 + 4 * n_mod                 # nothing else was recorded (no other dtype)


def test_featurize_run_at_bf16_on_cpu_computes_adam_and_sketch_in_fp32(workspace, tmp_path, monkeypatch):
    """The whole featurize path (`Workspace.featurize`, device cpu, --precision bfloat16)."""
    from conftest import write_jsonl
    from lessdb.featurize import adam, sketch
    from test_featurize_jobs import _records

    workspace.ingest(write_jsonl(tmp_path / "pool.jsonl", _records(0, 8)), pool="p", progress=False)
    run = workspace.warmup("p", model="tiny", percentage=0.5, epochs=1, lora_r=4, lora_alpha=16, max_seq_length=256,
                           batch_size=4, micro_batch_size=4, device="cpu", progress=False)
    dtypes = Counter()
    orig_apply, orig_add = adam.AdamSlice.apply, sketch.CountSketch.add
    monkeypatch.setattr(adam.AdamSlice, "apply",
                        lambda self, g, den=None: (dtypes.update([("adam", g.dtype, self.M.dtype)]),
                                                   orig_apply(self, g, den))[1])
    monkeypatch.setattr(sketch.CountSketch, "add",
                        lambda self, out, i, x: (dtypes.update([("sketch", x.dtype, out.dtype)]),
                                                 orig_add(self, out, i, x))[1])
    summary = workspace.featurize(run.run_id, dim=64, compute_dtype="bfloat16", device="cpu", progress=False)
    assert summary.examples == 8 and summary.excluded == 0
    fs = [f for f in workspace.feature_sets() if f["feature_set_id"] == summary.feature_set_id][0]
    assert fs["compute_dtype"] == "bfloat16"
    assert set(dtypes) == {("adam", torch.float32, torch.float32), ("sketch", torch.float32, torch.float32)}


def _ops(engine, batch) -> Counter:
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops[str(func.overloadpacket)] += 1
            return func(*args, **(kwargs or {}))

    with Count() as c:
        engine.features(batch).to_host()
    return c.ops


def test_a_batch_does_no_per_example_work_and_a_fixed_number_of_host_reads():
    """Every tensor op of a featurize batch, counted by the dispatcher: the same ops for 2 examples as for 16
    (no per-example Python loop), and the ops that read a device value on the host (a GPU sync) a fixed few."""
    _, engines = _tiny_engines()
    engine = engines["bfloat16"]
    small, big = _batch(2, seed=7), _batch(16, seed=8)
    for b in (small, big):
        engine.features(b)            # scratch buffers are allocated once per shape: not counted below
    ops_small, ops_big = _ops(engine, small), _ops(engine, big)
    assert ops_small == ops_big, {k: (ops_small[k], ops_big[k]) for k in ops_small | ops_big
                                  if ops_small[k] != ops_big[k]}
    host_reads = {k: v for k, v in ops_big.items() if k in ("aten._local_scalar_dense", "aten.nonzero", "aten.item")}
    assert sum(host_reads.values()) <= 3, host_reads


def test_gpu_batches_are_bounded_by_count_only_and_cpu_by_512_tokens():
    from lessdb.models.batching import CPU_BATCH_TOKENS, batches_by_length, token_budget

    assert token_budget("cpu") == CPU_BATCH_TOKENS == 512
    assert token_budget("cuda") is None and token_budget("cuda:1") is None and token_budget(torch.device("cuda", 0)) is None
    lengths = sorted([300, 310, 320, 900, 910, 2000, 2040, 2048])
    gpu = batches_by_length(list(range(8)), lengths, 4, token_budget("cuda"))
    cpu = batches_by_length(list(range(8)), lengths, 4, token_budget("cpu"))
    assert gpu == [[0, 1, 2, 3], [4, 5, 6, 7]]                     # length-sorted groups of the batch size
    assert all(len(b) == 1 for b in cpu)                            # no two of these fit in 512 padded tokens


def test_one_copy_each_way():
    from lessdb.featurize.engine import BatchFeatures
    from lessdb.models.tokenization import to_device

    vectors = torch.randn(3, 5)
    feats = BatchFeatures(vectors, torch.tensor([True, False, True]), torch.zeros(3), torch.tensor([1.0, 0.0, 2.5]))
    ok, v, n = feats.to_host()
    assert ok.tolist() == [True, False, True] and v.dtype == np.float32 and v.flags["C_CONTIGUOUS"]
    assert np.array_equal(v, vectors.numpy()) and n.tolist() == [1.0, 0.0, 2.5]
    batch = {"input_ids": torch.ones(2, 3, dtype=torch.long)}
    assert to_device(batch, torch.device("cpu"))["input_ids"] is batch["input_ids"]   # on a CPU: no copy at all


def test_gpu_check_budget_skips_what_would_not_fit(tmp_path):
    """A budget already spent: the first model's setup still runs (something must be measured), every grid point
    and the diagnostics are skipped and listed, and the report is still complete JSON."""
    out = tmp_path / "gpu_check.json"
    # as a file (`python bench/gpu_check.py`, the form the issue names): it runs itself again as the module
    proc = subprocess.run([sys.executable, "bench/gpu_check.py", "--device", "cpu", "--quick", "--models", "tiny",
                           "--threads", "1", "--budget-s", "0.5", "--out", str(out)], capture_output=True, text=True,
                          cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["models"]["tiny"]["points"] == [] and "agreement" not in report["models"]["tiny"]
    skipped = [s["what"] for s in report["skipped"]]
    assert skipped == ["tiny bfloat16 batch 4 x 32", "tiny float32 batch 4 x 32", "tiny: diagnostics and agreement"]
    assert "running it anyway" in proc.stderr and "skipped (budget): tiny bfloat16 batch 4 x 32" in proc.stdout
    assert report["verdicts"] == {}
