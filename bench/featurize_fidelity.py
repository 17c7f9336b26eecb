"""Featurization fidelity (issue 4): how well each sketch keeps LESS's scores, on the real SmolLM2-135M with
LoRA r=128 on q/k/v/o (P = 14,745,600) and real ShareGPT candidates. The speed: bench/featurize_speed.py.

    python -m bench.featurize_fidelity [--n-fidelity 64] [--quick]
    python -m bench.featurize_fidelity --replicates [--n-fidelity 128] [--exact-cache DIR] [--quick]
        (= the old `python -m bench.featurize --fidelity-only`: 3 BBH subtasks, ~90 countsketch seeds, dense Rademacher
        via its Gaussian limit; JSON in bench/out/fidelity.json)

Basic: exact (unsketched) Adam Γ of N candidates and plain gradients of the 3 examples of the BBH subtask
`boolean_expressions` (max 1024 tokens: its 2-shot prompts exceed 256); exact score = cos(mean of the
normalised validation gradients, Γ); sketched score the same in sketch space. Spearman(exact, sketched) per
sketch and d ∈ {1024, 2048, 4096, 8192} (dense-rademacher: one seed, d' < 8192 are the first d' columns of the
same matrix; sparse sketches: mean over 3 seeds).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.featurize_common import (REPO, add_common_arguments, exact_batches, exact_vectors, load, log,
                                    lora_model, scores, setup, sharegpt_examples, sketch_all, spearman,
                                    warm_adam_state)
from lessdb.featurize.per_example_grads import lora_params
from lessdb.featurize.sketch import CountSketch, DenseRademacher
from lessdb.models.tokenization import encode_conversation, pad_token_id


def basic_fidelity(args, ws, tok, model, examples, state, params, pad) -> None:
    """One BBH subtask, a few sketch seeds per d (the table in bench/RESULTS.md "Featurization")."""
    from lessdb.tasks.catalog import load_task

    val = load_task(ws, "bbh").subtasks["boolean_expressions"]
    val_items = [(ex.example_id, encode_conversation(tok, ex.messages, 1024)) for ex in val]
    t = time.perf_counter()
    cands = examples[:args.n_fidelity]
    _, V, _ = exact_vectors(model, params, val_items, pad, "sgd")
    _, C, _ = exact_vectors(model, params, cands, pad, "adam", state)
    X = torch.cat([V, C])
    del V, C
    exact = scores(X, len(val_items))
    log(f"exact vectors for {len(val_items)} validation + {len(cands)} candidates: {time.perf_counter() - t:.0f}s; "
        f"exact score range {exact.min():.4f}..{exact.max():.4f}")
    sizes = [p.numel for p in params]
    dims = [1024, 2048, 4096, 8192]
    results = {}
    # replicates per d: the 8192 dense columns split into 8192/d disjoint blocks, each an independent
    # d-column Rademacher sketch; the sparse sketches get the same number of seeds (at least 3)
    reps = {d: max(dims) // d for d in dims}
    for kind, nnz in (("countsketch", 1), ("sparse-sign", 4)):
        for d in dims:
            rs = [spearman(exact, scores(sketch_all(CountSketch(sizes, d, seed, nnz=nnz), X, sizes), len(val_items)))
                  for seed in range(max(3, reps[d]))]
            results[(kind, d)] = (float(np.mean(rs)), float(np.std(rs)), len(rs))
    if not args.quick:
        t = time.perf_counter()
        full = sketch_all(DenseRademacher(sizes, max(dims), 0, cache_bytes=0), X, sizes)
        for d in dims:
            rs = [spearman(exact, scores(full[:, j * d:(j + 1) * d].clone(), len(val_items))) for j in range(reps[d])]
            results[("dense-rademacher", d)] = (float(np.mean(rs)), float(np.std(rs)), len(rs))
        log(f"dense-rademacher sketch of {X.shape[0]} vectors at d={max(dims)}: {time.perf_counter() - t:.0f}s")
    log("fidelity: Spearman(exact, sketched scores), BBH boolean_expressions, "
        f"{len(cands)} ShareGPT candidates")
    log("mean ± std over replicates (n)")
    log("sketch            " + "".join(f"d={d:<20}" for d in dims))
    for kind in ("dense-rademacher", "countsketch", "sparse-sign"):
        if (kind, dims[0]) in results:
            log(f"{kind:<18}" + "".join(f"{results[(kind, d)][0]:.3f} ± {results[(kind, d)][1]:.3f} ({results[(kind, d)][2]})    "
                                        for d in dims))


# --- --replicates (formerly --fidelity-only): issue 4's fidelity criterion with enough replicates to compare the sketches ------------
#
# Exact vectors are computed once and held as Xt [P, rows] (coordinates × vectors). Every sketch is compared
# on the same exact scores, so the only randomness is the sketch's own.
# - countsketch / sparse-sign: buckets and signs from the library's CountSketch.slice_hash, applied as one
#   sparse [d, P] × dense [P, rows] product (checked equal to CountSketch.add for seed 0). One d=8192 sketch
#   per seed serves every d: folding columns u ↦ block·(d/s) + (u mod d/s) inside each of the s blocks maps
#   iid uniform buckets to iid uniform buckets, i.e. it is exactly a d-column sketch of the same kind.
# - dense Rademacher: a few real DenseRademacher replicates (its generator is slow), and its expectation from
#   the low-rank reduction X = L Qᵀ (L Lᵀ = X Xᵀ, Q orthonormal [P, r]): XΠ = L (QᵀΠ), and QᵀΠ·√d is iid
#   N(0, 1) in the CLT limit (checked on the real replicates), so the sketched Gram L (QᵀΠ)(ΠᵀQ) Lᵀ is
#   L A Aᵀ Lᵀ / d with A Aᵀ ~ Wishart(d, I) — drawn by Bartlett's decomposition in O(r³) per replicate.

FID_DIMS = (1024, 2048, 4096, 8192)


def exact_matrix_t(model, params, groups, pad, state):
    """Exact L2-normalised vectors as Xt [P, rows] float32, rows in the order of `groups` = [(kind, items,
    batch size)]; filled batch by batch so the 8 GB buffer is never copied."""
    P = sum(p.numel for p in params)
    Xt = torch.empty(P, sum(len(items) for _, items, _ in groups))
    r0 = 0
    for kind, items, bs in groups:
        row = {i: r0 + k for k, (i, _) in enumerate(items)}
        for chunk, vecs in exact_batches(model, params, items, pad, kind, state if kind == "adam" else None, bs):
            Xt[:, [row[i] for i, _ in chunk]] = vecs.T
        r0 += len(items)
    return Xt


def gram_pass(Xt, chunk: int = 1 << 18):
    """(X Xᵀ, (X∘X)(X∘X)ᵀ) in float64, over coordinate chunks. The second gives Σᵢ xᵢ²yᵢ², the term by which
    Rademacher sketches differ from Gaussian ones in the variance of ⟨Πᵀx, Πᵀy⟩."""
    n = Xt.shape[1]
    G, G4 = torch.zeros(n, n, dtype=torch.float64), torch.zeros(n, n, dtype=torch.float64)
    for a in range(0, Xt.shape[0], chunk):
        c = Xt[a:a + chunk].double()
        G += c.T @ c
        c.mul_(c)
        G4 += c.T @ c
    return G, G4


def sparse_sign_csr(sk: CountSketch) -> torch.Tensor:
    """The library sketch `sk` (its own slice_hash buckets and signs, weight 1/√s) as a [d, P] CSR matrix."""
    hashes = [sk.slice_hash(k) for k in range(len(sk.slice_sizes))]
    # entry e of the [nnz, P] layout is coordinate e mod P (slices are concatenated in order)
    b = np.concatenate([h[0] for h in hashes], axis=1).reshape(-1)
    order = np.argsort(b.astype(np.int16 if sk.dim <= 1 << 15 else np.int64), kind="stable")
    crow = np.zeros(sk.dim + 1, dtype=np.int32)
    crow[1:] = np.cumsum(np.bincount(b, minlength=sk.dim))
    vals = np.concatenate([h[1] for h in hashes], axis=1).reshape(-1)[order].astype(np.float32) / np.float32(np.sqrt(sk.nnz))
    return torch.sparse_csr_tensor(torch.from_numpy(crow), torch.from_numpy((order % sk.n_params).astype(np.int32)),
                                   torch.from_numpy(vals), size=(sk.dim, sk.n_params))


def apply_csr(S, Xt):
    return (S @ Xt).T.contiguous()


def library_sketch(sk, Xt):
    """sketch_all() on the Xt layout (add() uses its input as scratch, hence the copies)."""
    out = sk.new_output(Xt.shape[1])
    start = 0
    for k, n in enumerate(sk.slice_sizes):
        sk.add(out, k, Xt[start:start + n].T.contiguous())
        start += n
    return out


def fold(Y, d: int, nnz: int):
    """[rows, D] sparse-sign sketch (s = nnz blocks of D/s columns) → the d-column one with buckets u mod d/s."""
    rows, D = Y.shape
    return Y.reshape(rows, nnz, (D // nnz) // (d // nnz), d // nnz).sum(2).reshape(rows, d)


def folded_buckets(sk: CountSketch, k: int, d: int):
    """Slice k's buckets after fold() to d columns (the direct construction the fold is checked against)."""
    b, sg = sk.slice_hash(k)
    block = sk.dim // sk.nnz
    return (b // block) * (d // sk.nnz) + (b % block) % (d // sk.nnz), sg


def spearman_rows(a, b):
    """spearman() along the last axis, broadcast over the others (continuous scores: no ties)."""
    ra = a.argsort(-1).argsort(-1).double()
    rb = b.argsort(-1).argsort(-1).double()
    ra = ra - ra.mean(-1, keepdim=True)
    rb = rb - rb.mean(-1, keepdim=True)
    return (ra * rb).sum(-1) / ((ra * ra).sum(-1) * (rb * rb).sum(-1)).sqrt()


class Replicates:
    """Per sketch kind and d: Spearman [n, n_subtasks] and control variates [n, 2·n_subtasks] of each replicate.

    From the linearised score error δs = J·vec(Ĝ − G) (J = ∂scores/∂Gram at the exact Gram G), centred over the
    candidates, per subtask: h = Σ δs² / Σ (s − s̄)² and l = Σ δs·(s − s̄) / Σ (s − s̄)². l is linear in Ĝ − G,
    so E[l] = 0 for every unbiased sketch; h is a quadratic form in Ĝ − G, and CountSketch, sparse-sign and
    dense Rademacher have the same Cov(Ĝ) (the variance formula below holds for every pair of entries), so E[h]
    is the same for all of them (a Gaussian Π lacks their −(2/d)Σᵢ aᵢbᵢcᵢdᵢ term, at most max Σxᵢ⁴ ≈ 1e-4
    relative here — the same approximation the Gaussian limit itself makes). Subtracting βᵀ(h, l)
    from each replicate's Spearman therefore changes no expectation difference between sketches, and removes
    the part of the replicate-to-replicate spread that (h, l) explain."""

    def __init__(self, G, groups, cand, exact):
        self.G, self.groups, self.cand, self.exact = G, groups, cand, exact
        J = torch.autograd.functional.jacobian(lambda g: gram_scores(g, groups, cand), G)
        self.J = J.reshape(-1, G.numel())                                         # [S·N, r²]
        self.spread = (exact - exact.mean(-1, keepdim=True)).pow(2).sum(-1)      # [S]
        self.sp: dict = {}
        self.h: dict = {}

    def add(self, kind: str, d: int, Ghat):
        """Ghat [m, r, r]: sketched Grams, scaled so that E[Ĝ] = G."""
        Ghat = Ghat.double()
        sp = spearman_rows(gram_scores(Ghat, self.groups, self.cand), self.exact).numpy()
        ds = ((Ghat - self.G).reshape(Ghat.shape[0], -1) @ self.J.T).reshape(Ghat.shape[0], *self.exact.shape)
        ds = ds - ds.mean(-1, keepdim=True)
        h = torch.cat([ds.pow(2).sum(-1) / self.spread,
                       (ds * (self.exact - self.exact.mean(-1, keepdim=True))).sum(-1) / self.spread], -1).numpy()
        self.sp.setdefault((kind, d), []).append(sp)
        self.h.setdefault((kind, d), []).append(h)

    def get(self, kind, d):
        return np.concatenate(self.sp[(kind, d)]), np.concatenate(self.h[(kind, d)])


def gram_scores(Gm, groups, cand):
    """scores() for several subtasks at once, from the Gram matrix [..., rows, rows] of the vectors: cosine of
    each candidate with the mean of the subtask's normalised validation rows → [..., n_subtasks, n_candidates]."""
    n = Gm.diagonal(dim1=-2, dim2=-1).sqrt()
    C = Gm / (n[..., :, None] * n[..., None, :])
    out = []
    for g in groups:
        num = C[..., cand, :][..., g].mean(-1)
        den = C[..., g, :][..., g].mean((-2, -1)).sqrt()
        out.append(num / den[..., None])
    return torch.stack(out, -2)


def gaussian_limit(reps, L, d, n, rng, batch=500):
    """n dense-Gaussian sketches at d via Bartlett: A lower triangular with A_ii² ~ χ²(d − i), A_ij ~ N(0, 1)
    below the diagonal, so A Aᵀ ~ Wishart_r(d, I) and the sketched Gram is L A Aᵀ Lᵀ / d."""
    r = L.shape[1]
    for a in range(0, n, batch):
        m = min(batch, n - a)
        A = torch.from_numpy(rng.standard_normal((m, r, r))).tril_(-1)
        A.diagonal(dim1=-2, dim2=-1).copy_(torch.from_numpy(np.sqrt(rng.chisquare(d - np.arange(r), size=(m, r)))))
        M = L @ A
        reps.add("dense-gaussian-limit", d, M @ M.transpose(-1, -2) / d)


def gaussian_direct(reps, L, d, n, gen, batch=8):
    """The same by brute force (Z [r, d] iid N(0, 1), sketch L Z): a check on the Bartlett draws."""
    for a in range(0, n, batch):
        M = L @ torch.randn(min(batch, n - a), L.shape[1], d, dtype=torch.float64, generator=gen)
        reps.add("dense-gaussian-direct", d, M @ M.transpose(-1, -2) / d)


def dense_sketch(Xt, sizes, dcols, seed):
    sk = DenseRademacher(sizes, dcols, seed, cache_bytes=0)
    out = sk.new_output(Xt.shape[1])
    start = 0
    for k, n in enumerate(sizes):
        sk.add(out, k, Xt[start:start + n].T)     # dense add only reads x
        start += n
    return out


def clt_check(L, Y):
    """Z = L⁻¹ XΠ·√d = √d QᵀΠ for a real dense sketch Y = XΠ [rows, d]: iid N(0, 1) in the Gaussian limit."""
    d = Y.shape[1]
    Z = torch.linalg.solve_triangular(L, Y.double(), upper=False) * np.sqrt(d)
    z = Z.reshape(-1)
    C = Z @ Z.T / d
    off = C - torch.diag(torch.diag(C))
    m2 = float((z * z).mean())
    return {"entries": z.numel(), "mean": float(z.mean()), "mean_se_if_gaussian": float(1 / np.sqrt(z.numel())),
            "var": m2, "var_se_if_gaussian": float(np.sqrt(2 / z.numel())),
            "excess_kurtosis": float((z ** 4).mean() / m2 ** 2 - 3), "excess_kurtosis_se_if_gaussian": float(np.sqrt(24 / z.numel())),
            "cov_offdiag_rms": float(off.pow(2).sum().div(C.numel() - C.shape[0]).sqrt()),
            "cov_offdiag_rms_expected": float(1 / np.sqrt(d))}


def summarize(sp, h, names):
    """sp [n, n_subtasks] → mean over subtasks per replicate, then mean / sd / se over replicates."""
    v = np.asarray(sp, dtype=float)
    avg = v.mean(1)
    n = len(avg)
    se = lambda x: float(x.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return {"n": n, "mean": float(avg.mean()), "sd": float(avg.std(ddof=1)) if n > 1 else float("nan"), "se": se(avg),
            "h_mean": float(np.asarray(h)[:, :v.shape[1]].mean()), "l_mean": float(np.asarray(h)[:, v.shape[1]:].mean()),
            "per_subtask": {s: {"mean": float(v[:, j].mean()), "se": se(v[:, j])} for j, s in enumerate(names)}}


def compare(sp_x, h_x, sp_g, h_g):
    """E[Spearman_x] − E[Spearman_dense] (g: Gaussian-limit draws), plain and with the control variates
    (β by least squares on the Gaussian draws alone, so it does not depend on the x sample)."""
    x, g = np.asarray(sp_x).mean(1), np.asarray(sp_g).mean(1)
    h_x, h_g = np.asarray(h_x), np.asarray(h_g)
    nx, ng, S = len(x), len(g), np.asarray(sp_x).shape[1]
    varx = lambda a: a.var(ddof=1) if len(a) > 1 else float("nan")
    diff, se = float(x.mean() - g.mean()), float(np.sqrt(varx(x) / nx + varx(g) / ng))
    beta = np.linalg.lstsq(h_g - h_g.mean(0), g - g.mean(), rcond=None)[0]
    ax, ag = x - h_x @ beta, g - h_g @ beta
    hx, hg = h_x[:, :S].mean(1), h_g[:, :S].mean(1)
    per = []
    for j in range(S):
        yx, yg = np.asarray(sp_x)[:, j], np.asarray(sp_g)[:, j]
        b = np.linalg.lstsq(h_g - h_g.mean(0), yg - yg.mean(), rcond=None)[0]
        px, pg = yx - h_x @ b, yg - h_g @ b
        dj, sj = float(px.mean() - pg.mean()), float(np.sqrt(varx(px) / nx + varx(pg) / ng))
        per.append({"diff": float(yx.mean() - yg.mean()), "se": float(np.sqrt(varx(yx) / nx + varx(yg) / ng)),
                    "diff_cv": dj, "se_cv": sj, "ci95_cv": [dj - 1.96 * sj, dj + 1.96 * sj]})
    diff_cv, se_cv = float(ax.mean() - ag.mean()), float(np.sqrt(varx(ax) / nx + varx(ag) / ng))
    verdict = lambda lo, hi: "meets" if lo > -0.01 else ("fails" if hi < -0.01 else "inconclusive")
    return {"diff": diff, "se": se, "ci95": [diff - 1.96 * se, diff + 1.96 * se],
            "verdict_vs_-0.01": verdict(diff - 1.96 * se, diff + 1.96 * se),
            "cv_beta": beta.tolist(), "cv_r2_gaussian": float(1 - ag.var() / g.var()),
            "cv_r2_x": float(1 - ax.var() / x.var()) if nx > 2 else float("nan"),
            "diff_cv": diff_cv, "se_cv": se_cv, "ci95_cv": [diff_cv - 1.96 * se_cv, diff_cv + 1.96 * se_cv],
            "verdict_cv_vs_-0.01": verdict(diff_cv - 1.96 * se_cv, diff_cv + 1.96 * se_cv),
            "h_mean_x_minus_gaussian": float(hx.mean() - hg.mean()), "h_mean_diff_se": float(np.sqrt(varx(hx) / nx + varx(hg) / ng)),
            "l_mean_x": float(h_x[:, S:].mean()), "l_mean_x_se": float(np.sqrt(varx(h_x[:, S:].mean(1)) / nx)),
            "per_subtask_index": per}


def fidelity_only(args):
    import gc
    import json

    from lessdb.tasks.catalog import load_task

    T0, C0 = time.perf_counter(), time.process_time()
    stamp = lambda: f"[{time.perf_counter() - T0:6.0f}s wall {time.process_time() - C0:6.0f}s cpu load {os.getloadavg()[0]:.1f}]"
    report = {"command": " ".join(sys.argv), "load_average_start": os.getloadavg(), "torch_threads": torch.get_num_threads(),
              "dims": list(FID_DIMS), "subtasks": args.subtasks, "timings_wall_s": {}, "timings_cpu_s": {}}
    out_path = args.out

    def save():
        report["load_average_now"] = os.getloadavg()
        report["elapsed_wall_s"] = time.perf_counter() - T0
        report["elapsed_cpu_s"] = time.process_time() - C0
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(report, indent=1))

    class stage:
        def __init__(self, name):
            self.name = name

        def __enter__(self):
            self.t, self.c = time.perf_counter(), time.process_time()

        def __exit__(self, *exc):
            report["timings_wall_s"][self.name] = time.perf_counter() - self.t
            report["timings_cpu_s"][self.name] = time.process_time() - self.c
            log(f"{stamp()} {self.name}: {report['timings_wall_s'][self.name]:.0f}s wall, "
                f"{report['timings_cpu_s'][self.name]:.0f}s cpu")

    log(f"{stamp()} fidelity-only: N={args.n_fidelity} candidates, subtasks {args.subtasks}, torch threads {torch.get_num_threads()}")
    cache = args.exact_cache
    key = {"n_candidates": args.n_fidelity, "subtasks": args.subtasks}
    if cache and (cache / "meta.json").exists() and json.loads((cache / "meta.json").read_text())["key"] == key:
        with stage("load_exact_cache"):
            info = json.loads((cache / "meta.json").read_text())
            Xt = torch.from_numpy(np.load(cache / "xt.npy"))
        log(f"{stamp()} exact vectors from {cache} (computed {info['computed']})")
    else:
        with stage("setup"):
            torch.manual_seed(0)     # peft's LoRA initialisation
            ws, loaded = load(args.workspace)
            tok, pad = loaded.tokenizer, pad_token_id(loaded.tokenizer)
            model = lora_model(loaded.model)
            examples = sharegpt_examples(ws, tok, args.n_fidelity + 8)
            state = warm_adam_state(model, examples[-8:], pad)
            params = lora_params(model)
            val, groups = [], []
            task = load_task(ws, "bbh")
            for name in args.subtasks:
                items = [(f"{name}/{ex.example_id}", encode_conversation(tok, ex.messages, 1024)) for ex in task.subtasks[name]]
                groups.append(list(range(len(val), len(val) + len(items))))
                val += items
            cands = examples[:args.n_fidelity]
            assert len(cands) == args.n_fidelity, "not enough ShareGPT examples with a completion token"
        with stage("exact_vectors"):
            Xt = exact_matrix_t(model, params, [("sgd", val, 2), ("adam", cands, 4)], pad, state)
        info = {"key": key, "computed": time.strftime("%Y-%m-%d %H:%M"), "model": loaded.name, "model_sha256": loaded.sha256,
                "sizes": [p.numel for p in params], "groups": groups, "validation_ids": [i for i, _ in val],
                "candidate_ids": [i for i, _ in cands], "validation_tokens": [len(e.input_ids) for _, e in val],
                "candidate_tokens_mean": float(np.mean([len(e.input_ids) for _, e in cands])),
                "exact_vectors_wall_s": report["timings_wall_s"]["exact_vectors"]}
        del model, loaded, state, examples
        gc.collect()
        if cache:
            cache.mkdir(parents=True, exist_ok=True)
            np.save(cache / "xt.npy", Xt.numpy())
            (cache / "meta.json").write_text(json.dumps(info))
    sizes, groups = info["sizes"], info["groups"]
    P = sum(sizes)
    n_val = sum(len(g) for g in groups)
    cand = list(range(n_val, Xt.shape[1]))
    report.update({k: v for k, v in info.items() if k not in ("key", "sizes")}, P=P, n_candidates=len(cand))
    log(f"{stamp()} model {info['model']}, P = {P:,}; validation tokens {info['validation_tokens']}; "
        f"candidate tokens mean {info['candidate_tokens_mean']:.0f}")

    with stage("gram"):
        G, G4 = gram_pass(Xt)
        L = torch.linalg.cholesky(G)
        exact = gram_scores(G, groups, cand)                                    # [S, N] float64
        evals = torch.linalg.eigvalsh(G)
        cos = G[n_val:, :n_val]                                                 # candidates × validation
        kappa = 2 * G4[n_val:, :n_val] / (1 + cos ** 2)     # rows are unit vectors: ‖x‖²‖y‖² = 1
        neff = 1 / torch.diag(G4)
        reps = Replicates(G, groups, cand, exact)
    report["exact"] = {
        "gram_eigenvalues_min_max": [float(evals.min()), float(evals.max())],
        "score_sd_per_subtask": {s: float(exact[j].std()) for j, s in enumerate(args.subtasks)},
        "score_range_per_subtask": {s: [float(exact[j].min()), float(exact[j].max())] for j, s in enumerate(args.subtasks)},
        "scores": {s: exact[j].tolist() for j, s in enumerate(args.subtasks)},
        "effective_coordinates_1_over_sum_x4": {"candidates_min": float(neff[n_val:].min()), "candidates_median": float(neff[n_val:].median()),
                                                "validation": neff[:n_val].tolist()},
    }
    # Var⟨Πᵀx, Πᵀy⟩ = (‖x‖²‖y‖² + ⟨x,y⟩² − 2Σxᵢ²yᵢ²)/d for CountSketch, sparse-sign and dense Rademacher alike
    # (Gaussian Π: without the last term); κ is that term's share, noise_sd the resulting sd for unit x, y
    report["theory"] = {
        "variance": "Var<Pi^T x, Pi^T y> = (|x|^2|y|^2 + <x,y>^2 - 2 sum_i x_i^2 y_i^2)/d for countsketch, sparse-sign and dense Rademacher",
        "kappa_2sum_x2y2_over_1_plus_cos2": {"median": float(kappa.median()), "max": float(kappa.max())},
        "cos_candidate_validation": {"median_abs": float(cos.abs().median()), "max_abs": float(cos.abs().max())},
        "noise_sd_of_sketched_cosine": {str(d): float(((1 + cos ** 2 - 2 * G4[n_val:, :n_val]) / d).sqrt().median())
                                        for d in FID_DIMS},
    }
    log(f"{stamp()} Gram eigenvalues {evals.min():.3g}..{evals.max():.3g}; exact score sd per subtask "
        f"{[round(v, 4) for v in report['exact']['score_sd_per_subtask'].values()]}; kappa median {kappa.median():.2e} "
        f"max {kappa.max():.2e}; 1/Σx⁴ candidates median {neff[n_val:].median():.3g} min {neff[n_val:].min():.3g}, "
        f"validation {[f'{v:.3g}' for v in neff[:n_val].tolist()]}")
    save()

    def record(kinds=None):
        res = report.setdefault("results", {})
        for (kind, d) in list(reps.sp):
            if kinds is None or kind in kinds:
                sp, h = reps.get(kind, d)
                res.setdefault(kind, {})[str(d)] = summarize(sp, h, args.subtasks)
                if kind not in ("dense-gaussian-limit", "dense-gaussian-direct"):
                    res[kind][str(d)]["replicates"] = np.round(sp, 5).tolist()
                    res[kind][str(d)]["control_variates_h_l"] = np.round(h, 6).tolist()
        save()

    with stage("gaussian_limit"):
        rng = np.random.default_rng(12345)
        gen = torch.Generator().manual_seed(12345)
        for d in FID_DIMS:
            gaussian_limit(reps, L, d, args.gauss_reps, rng)
            gaussian_direct(reps, L, d, args.gauss_direct, gen)
    record()
    for d in FID_DIMS:
        a, b = report["results"]["dense-gaussian-limit"][str(d)], report["results"]["dense-gaussian-direct"][str(d)]
        log(f"{stamp()} d={d}: Gaussian limit {a['mean']:.4f} ± {a['se']:.4f} (n={a['n']}, sd {a['sd']:.3f}, h {a['h_mean']:.3f}, "
            f"l {a['l_mean']:+.4f}); "
            f"brute force {b['mean']:.4f} ± {b['se']:.4f} (n={b['n']}, h {b['h_mean']:.3f})")

    def sparse_runs(kind, nnz, max_seeds, cpu_budget, check):
        c0 = time.process_time()
        for seed in range(max_seeds):
            sk = CountSketch(sizes, max(FID_DIMS), seed, nnz=nnz)
            Y = apply_csr(sparse_sign_csr(sk), Xt)
            if seed == 0 and check:
                ref = library_sketch(sk, Xt)
                err = float((Y - ref).abs().max() / ref.abs().max())
                d0 = min(FID_DIMS)
                direct = CountSketch(sizes, d0, seed, nnz=nnz)
                direct.slice_hash = lambda k, sk=sk, d0=d0: folded_buckets(sk, k, d0)
                err_fold = float((fold(Y, d0, nnz) - apply_csr(sparse_sign_csr(direct), Xt)).abs().max() / Y.abs().max())
                rho_lib = spearman(exact[0].numpy(), scores(torch.cat([ref[groups[0]], ref[cand]]), len(groups[0])))
                rho_new = float(spearman_rows(gram_scores((Y @ Y.T).double(), groups, cand)[0], exact[0]))
                report.setdefault("checks", {})[kind] = {"csr_vs_library_add_max_rel_err": err, "fold_vs_direct_max_rel_err": err_fold,
                                                         "spearman_library_path_subtask0": rho_lib, "spearman_this_path_subtask0": rho_new}
                log(f"{stamp()} {kind} seed 0 checks: CSR vs CountSketch.add max rel err {err:.1e}; fold({d0}) vs direct "
                    f"{err_fold:.1e}; Spearman via scores()/spearman() {rho_lib:.6f} vs here {rho_new:.6f}")
                del ref
            for d in FID_DIMS:
                Yd = fold(Y, d, nnz).double()
                reps.add(kind, d, (Yd @ Yd.T)[None])
            used = time.process_time() - c0
            if seed in (0, 1, 4) or (seed + 1) % 20 == 0:
                log(f"{stamp()} {kind}: {seed + 1} seeds, {used / (seed + 1):.1f}s cpu/seed")
            if used > cpu_budget and seed + 1 >= 3:
                break
        record([kind])

    with stage("countsketch"):
        sparse_runs("countsketch", 1, args.cs_seeds, args.cs_budget_s, True)

    # real dense Rademacher: disjoint column blocks of one dcols-column sketch are independent replicates
    if args.dense_columns:
        with stage("dense_rademacher"):
            Yd = dense_sketch(Xt, sizes, args.dense_columns, 0).double()
        report["clt_check_real_dense"] = clt_check(L, Yd)
        log(f"{stamp()} CLT check of √d·QᵀΠ on the real dense sketch: {report['clt_check_real_dense']}")
        for d in FID_DIMS:
            for j in range(args.dense_columns // d):
                B = Yd[:, j * d:(j + 1) * d]
                reps.add("dense-rademacher", d, (B @ B.T * (args.dense_columns / d))[None])
        record(["dense-rademacher"])

    if args.ss_seeds:
        with stage("sparse-sign"):
            sparse_runs("sparse-sign", 4, args.ss_seeds, args.ss_budget_s, args.quick)

    report["comparison"] = {}
    for kind in ("countsketch", "sparse-sign", "dense-rademacher"):
        for d in FID_DIMS:
            if (kind, d) in reps.sp:
                c = compare(*reps.get(kind, d), *reps.get("dense-gaussian-limit", d))
                c["per_subtask"] = dict(zip(args.subtasks, c.pop("per_subtask_index")))
                report["comparison"][f"{kind}@{d}"] = c
    report["load_average_end"] = os.getloadavg()
    save()
    print_fidelity_table(report)
    log(f"{stamp()} wrote {out_path}")


def print_fidelity_table(rep):
    dims = rep["dims"]
    res = rep["results"]
    cell = lambda r: f"{r['mean']:.4f} ± {r['se']:.4f} ({r['n']})"
    log(f"\nFidelity: Spearman(exact, sketched) of LESS scores, {rep['n_candidates']} ShareGPT candidates, BBH "
        f"{', '.join(rep['subtasks'])}: mean over the subtasks per replicate, then mean ± SE over replicates (n)")
    log("sketch                  " + "".join(f"d={d:<24}" for d in dims))
    for kind in ("dense-gaussian-limit", "dense-gaussian-direct", "dense-rademacher", "countsketch", "sparse-sign"):
        r = res.get(kind, {})
        log(f"{kind:<24}" + "".join((cell(r[str(d)]) if str(d) in r else "—").ljust(26) for d in dims))
    for s in rep["subtasks"]:
        log(f"  {s}:")
        for kind in ("dense-gaussian-limit", "countsketch", "sparse-sign"):
            r = res.get(kind, {})
            log(f"    {kind:<20}" + "".join((f"{r[str(d)]['per_subtask'][s]['mean']:.4f} ± {r[str(d)]['per_subtask'][s]['se']:.4f}"
                                            if str(d) in r else "—").ljust(26) for d in dims))
    log("minus dense (Gaussian limit): diff [95% CI] verdict vs −0.01; then with the control variates (h, l)")
    for kind in ("countsketch", "sparse-sign", "dense-rademacher"):
        for cv in ("", "_cv"):
            cs = [rep["comparison"].get(f"{kind}@{d}") for d in dims]
            log(f"{kind + (' (cv)' if cv else ''):<24}" + "".join(
                (f"{c['diff' + cv]:+.4f} [{c['ci95' + cv][0]:+.4f},{c['ci95' + cv][1]:+.4f}] {c['verdict' + cv + '_vs_-0.01'][:5]}"
                 if c else "—").ljust(26) for c in cs))
    log("countsketch minus dense per subtask, with the control variates: diff [95% CI]")
    for s in rep["subtasks"]:
        cs = [rep["comparison"][f"countsketch@{d}"]["per_subtask"][s] for d in dims]
        log(f"  {s:<22}" + "".join(f"{c['diff_cv']:+.4f} [{c['ci95_cv'][0]:+.4f},{c['ci95_cv'][1]:+.4f}]".ljust(26) for c in cs))


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--n-fidelity", type=int, default=None, help="default 64, --replicates 128")
    ap.add_argument("--replicates", "--fidelity-only", dest="fidelity_only", action="store_true",
                    help="the fidelity comparison with many sketch replicates (see fidelity_only)")
    ap.add_argument("--subtasks", default="boolean_expressions,date_understanding,word_sorting")
    ap.add_argument("--cs-seeds", type=int, default=200, help="replicates: most countsketch seeds")
    ap.add_argument("--cs-budget-s", type=float, default=850, help="replicates: stop adding countsketch seeds after this much CPU time")
    ap.add_argument("--ss-seeds", type=int, default=3, help="replicates: most sparse-sign seeds (0: none)")
    ap.add_argument("--ss-budget-s", type=float, default=60)
    ap.add_argument("--dense-columns", type=int, default=1024,
                    help="replicates: columns of the one real DenseRademacher sketch (0: none)")
    ap.add_argument("--gauss-reps", type=int, default=10000, help="replicates: Gaussian-limit (Bartlett) replicates per d")
    ap.add_argument("--gauss-direct", type=int, default=300, help="replicates: brute-force Gaussian replicates per d")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "fidelity.json")
    ap.add_argument("--exact-cache", type=Path, default=None,
                    help="replicates: directory to keep the exact vectors in (8 GB at N=128) and reuse them from")


def run_replicates(args):
    """--replicates: its own defaults (2 threads, 128 candidates; --quick shrinks every count)."""
    args.threads = args.threads or 2
    args.n_fidelity = args.n_fidelity or 128
    torch.set_num_threads(args.threads)
    args.subtasks = args.subtasks.split(",")
    if args.quick:
        args.n_fidelity, args.cs_seeds, args.ss_seeds, args.gauss_reps, args.gauss_direct = 8, 3, 2, 500, 40
        args.dense_columns = min(args.dense_columns, 1024)
    return fidelity_only(args)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(ap)
    add_arguments(ap)
    args = ap.parse_args()
    if args.fidelity_only:
        return run_replicates(args)
    torch.set_num_threads(args.threads or torch.get_num_threads())
    args.n_fidelity = args.n_fidelity or (24 if args.quick else 64)
    log(f"load average at start: {os.getloadavg()}; torch threads {torch.get_num_threads()}")
    t0 = time.perf_counter()
    ws, loaded, model, examples, state, params = setup(args, args.n_fidelity)
    basic_fidelity(args, ws, loaded.tokenizer, model, examples, state, params, pad_token_id(loaded.tokenizer))
    log(f"load average at end: {os.getloadavg()}; total {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
