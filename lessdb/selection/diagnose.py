"""Do a selection's scores mean anything? (`lessdb diagnose SEL`, and one line in `select`'s summary.)

- Sketch noise: the gap between the k-th member's score and the pool's median, in units of the sketch's noise
  (noise.py), with each checkpoint's own cosines.
  Not for `hybrid` nor round-robin/proportional balancing (noise.py says why): a line says why instead.
- Rank agreement between checkpoints: Spearman correlation of each checkpoint's term η̄ᵢ·cos over the scored
  pool (recomputed from the stored vectors at the recorded versions). A checkpoint with η̄ = 0 (a warmup whose
  epoch was only the warm-up step at lr 0) adds nothing to any score: it is named in words, not ranked.
  Degenerate cases (constant terms, zero noise) are handled here, so no library warning or nan reaches the user.
- Excluded or unscorable candidates and why, subtasks dropped, near-duplicates skipped.
- Overlap with random and BM25 at the same k: random from the recorded seed's draw over the same scored pool
  (expected overlap k²/N), BM25 from a recorded BM25 selection of the same task, pool, filter and k
  (computed and recorded once if there is none).
"""
from __future__ import annotations

import numpy as np

from .noise import gap_vs_noise, noise_applies, per_checkpoint_cosines
from .pool_scores import recompute_pool_scores
from .scoring import spearman


def rank_agreement(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rho; None where it is not defined (a constant ranking, fewer than 2 candidates), so nothing
    prints "nan"."""
    rho = spearman(a, b)
    return None if np.isnan(rho) else rho


def diagnose_selection(ws, ref: str) -> dict:
    from ..storage import meta_selections as meta
    from ..storage.features import get_feature_set
    from . import baselines

    sel = meta.get_selection(ws, ref)
    params = sel["params"] or {}
    members = meta.selection_members(ws, sel["selection_id"]).column("candidate_id").to_pylist()
    k = len(members)
    out: dict = {"selection_id": sel["selection_id"], "name": sel["name"], "method": sel["method"], "k": k,
                 "n_scored": sel["n_scored"], "n_unscorable": sel["n_unscorable"],
                 "unscorable": params.get("unscorable") or {}, "dropped_subtasks": params.get("dropped_subtasks")
                 or [], "skipped": params.get("skipped") or {}, "warnings": []}
    ids = None
    if sel.get("feature_set_id") and params.get("aggregation") in ("paper", "reference"):
        ps = recompute_pool_scores(ws, sel)
        ids, valid = ps.ids, ps.valid
        fs = get_feature_set(ws, sel["feature_set_id"])
        pc = ps.per_checkpoint[valid]
        w = np.asarray(ps.weights, dtype=np.float64)
        out["zero_weight_checkpoints"] = [e for e, wi in zip(ps.epochs, w) if wi == 0]
        agreement = []
        for a in range(len(ps.epochs)):
            for b in range(a + 1, len(ps.epochs)):
                if w[a] != 0 and w[b] != 0:
                    agreement.append({"checkpoints": [ps.epochs[a], ps.epochs[b]],
                                      "spearman": rank_agreement(pc[:, a], pc[:, b])})
        out["checkpoint_rank_agreement"] = agreement
        if out["zero_weight_checkpoints"]:
            out["warnings"].append(_zero_weight_words(out["zero_weight_checkpoints"], len(ps.epochs)))
        scores = ps.score[valid]
        kth = float(min(m for m in meta.selection_members(ws, sel["selection_id"]).column("score").to_pylist()))
        row_of = {c: i for i, c in enumerate(ps.ids)}
        kth_row = min((row_of[c] for c in members if c in row_of), key=lambda r: ps.score[r])
        med_row = np.flatnonzero(valid)[np.argsort(ps.score[valid], kind="stable")[len(scores) // 2]]
        if noise_applies(sel["method"], params):
            out["noise"] = gap_vs_noise(scores, kth, list(w), int(fs.dim),
                                        per_checkpoint_cosines(ps.per_checkpoint[kth_row], w),
                                        per_checkpoint_cosines(ps.per_checkpoint[med_row], w))
            if "warning" in out["noise"]:
                out["warnings"].append(out["noise"]["warning"])
        else:
            out["noise_not_applicable"] = _noise_words(sel["method"], params)
        low = [a for a in agreement if a["spearman"] is not None and a["spearman"] < 0.2]
        if low:
            out["warnings"].append("checkpoints disagree on the ranking (Spearman < 0.2 for " + ", ".join(
                f"{a['checkpoints'][0]} vs {a['checkpoints'][1]}" for a in low) + "): the score is dominated by "
                "whichever checkpoint weighs most")
        scored_ids = [c for c, ok in zip(ids, valid) if ok]
    else:
        scored_ids = None
    # overlap with random at the same k over the same scored candidates
    if scored_ids is not None:
        draw = baselines.random_scores(scored_ids, int(sel["seed"]))
        order = np.lexsort((np.asarray(scored_ids, dtype=object).astype(str), -draw))[:k]
        rnd = {scored_ids[i] for i in order}
        out["overlap_random"] = {"overlap": len(rnd & set(members)), "expected": k * k / len(scored_ids)}
    bm25 = _bm25_at_k(ws, sel, k)
    if bm25 is not None:
        other = set(meta.selection_members(ws, bm25).column("candidate_id").to_pylist())
        out["overlap_bm25"] = {"overlap": len(other & set(members)), "bm25_selection": bm25}
    return out


def _zero_weight_words(epochs: list[int], n_checkpoints: int) -> str:
    which = ", ".join(map(str, epochs))
    rest = ("no checkpoint weighs anything, so every score is 0" if len(epochs) == n_checkpoints else
            "the scores come from the other checkpoint(s) alone")
    return (f"checkpoint {which} has a mean learning rate (η̄) of 0: its warmup epoch was only the warm-up step at "
            f"lr 0, so LESS gives it no weight and {rest}; a warmup whose epochs take several optimizer steps "
            "(more examples, or a smaller --batch-size) gives each checkpoint a say")


def _noise_words(method: str, params: dict) -> str:
    if method == "hybrid":
        return ("not shown for hybrid: its fused scores are reciprocal ranks or z-scores, not a sketch estimate of "
                "a cosine, so sketch noise does not apply to them")
    balance = (params.get("picking") or {}).get("balance")
    return (f"not shown for --balance {balance}: members are claimed target by target, so the k-th member can sit "
            "below the pool's median by design; `lessdb show` lists each target's members")


def _bm25_at_k(ws, sel: dict, k: int) -> str | None:
    """A recorded BM25 selection of the same task, pool, filter and k (recorded here if there is none)."""
    from ..storage import meta_selections as meta
    from .config import SelectConfig
    from .select import select

    if sel["method"] == "bm25":
        return None
    pool = (sel["params"] or {}).get("pool")
    for s in meta.list_selections(ws):
        if (s["method"] == "bm25" and s["task_hash"] == sel["task_hash"] and s["k"] == k
                and (s["params"] or {}).get("pool") == pool and s["sql_filter"] == sel["sql_filter"]
                and s["replay_of"] is None):
            return s["selection_id"]
    targets = (sel["params"] or {}).get("targets")
    if targets:
        return None   # BM25 of a multi-target mix: compare per target instead
    res = select(ws, SelectConfig(task=sel["task"], method="bm25", pool=pool, where=sel["sql_filter"], count=k,
                                  run=sel["run_id"], progress=False))
    return res.selection_id


def format_diagnosis(d: dict) -> str:
    lines = [f"{d['selection_id']}" + (f" ({d['name']})" if d["name"] else "") +
             f": {d['method']}, k = {d['k']:,} of {d['n_scored']:,} scored; {d['n_unscorable']:,} unscorable"]
    why = ", ".join(f"{n:,} {r}" for r, n in d["unscorable"].items() if n)
    if why:
        lines.append(f"  unscorable: {why}")
    if d["dropped_subtasks"]:
        lines.append(f"  subtasks without a usable validation example: {', '.join(d['dropped_subtasks'])}")
    if d["skipped"]:
        lines.append("  skipped near-duplicates: " + ", ".join(f"{n:,} {r}" for r, n in d["skipped"].items()))
    for a in d.get("checkpoint_rank_agreement", []):
        rho = ("not defined (one checkpoint's terms are all equal)" if a["spearman"] is None
               else f"{a['spearman']:.3f}")
        lines.append(f"  checkpoints {a['checkpoints'][0]} vs {a['checkpoints'][1]}: Spearman {rho}")
    n = d.get("noise")
    if n:
        versus = (f"{n['gap_in_noise_sd']:.2f} x sketch noise sd {n['noise_sd_of_difference']:.3g}"
                  if n["gap_in_noise_sd"] is not None else "no sketch noise to compare with (no checkpoint weighs "
                                                            "anything, or every cosine is ±1)")
        lines.append(f"  k-th score {n['kth_score']:.4g} vs median {n['median_score']:.4g}: gap {n['gap']:.3g} = "
                     f"{versus} (d = {n['dim']})")
    if d.get("noise_not_applicable"):
        lines.append(f"  sketch noise: {d['noise_not_applicable']}")
    r = d.get("overlap_random")
    if r:
        lines.append(f"  overlap with random at the same k: {r['overlap']:,} (expected by chance {r['expected']:.1f})")
    b = d.get("overlap_bm25")
    if b:
        lines.append(f"  overlap with BM25 at the same k: {b['overlap']:,} ({b['bm25_selection']})")
    for w in d["warnings"]:
        lines.append(f"WARNING: {w}")
    return "\n".join(lines)
