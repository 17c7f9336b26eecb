"""Why was this candidate picked? (`lessdb explain SEL [CANDIDATE_ID]`, the `selection_explain` view.)

For a gradient selection (less, sgd, sign) the recorded score decomposes exactly (scoring.py's notation):

    score(z) = maxⱼ Inf(z, Dʲ),   Inf(z, Dʲ) = Σᵢ partᵢⱼ(z),   partᵢⱼ(z) = η̄ᵢ · cᵢⱼ(z)

with cᵢⱼ = cos(ḡᵢⱼ, x̂ᵢ(z)) (paper) or mean_{z'} cos(ûᵢ(z'), x̂ᵢ(z)) (reference). Behind each subtask mean are
its validation examples: for both aggregations Inf(z, Dʲ) = Σ_{z'∈Dʲ} contrib(z'), with

    paper      contrib(z') = Σᵢ η̄ᵢ · cos(ûᵢ(z'), x̂ᵢ(z)) / (nⱼ · ‖ḡᵢⱼ‖)    (ḡᵢⱼ = mean of the unit ûᵢ)
    reference  contrib(z') = Σᵢ η̄ᵢ · cos(ûᵢ(z'), x̂ᵢ(z)) / nⱼ

so the examples' contributions sum back to the subtask's influence. Everything is recomputed here, in float64,
from the stored vectors at the table version the selection recorded (independently of the scoring code), and
stored, so the view shows what `explain` computed.
"""
from __future__ import annotations

import numpy as np

from ..errors import LessdbError
from ..storage import meta_selections as meta

EXPLAINABLE = ("paper", "reference")


def explainable(sel: dict) -> bool:
    params = sel["params"] or {}
    return bool(sel.get("feature_set_id") and params.get("aggregation") in EXPLAINABLE
                and params.get("validation_examples"))


def explain_selection(ws, ref: str, candidate_id: str | None = None, top: int | None = None,
                      top_examples: int = 3, store: bool = True) -> dict:
    """Explanations of the members (one candidate, or the `top` best, or all), stored in DuckDB."""
    from ..storage import features as fstore
    from ..storage import meta_explain

    sel = meta.get_selection(ws, ref)
    params = sel["params"] or {}
    aggregation = params.get("aggregation")
    if not explainable(sel):
        raise LessdbError(f"selection {sel['selection_id']} ({sel['method']}) has no gradient score to explain: "
                          "explanations exist for less, sgd and sign selections")
    members = meta.selection_members(ws, sel["selection_id"]).to_pylist()
    if candidate_id is not None:
        members = [m for m in members if m["candidate_id"] == candidate_id]
        if not members:
            raise LessdbError(f"{candidate_id!r} is not a member of selection {sel['selection_id']}")
    elif top is not None:
        members = members[:top]
    fs = fstore.get_feature_set(ws, sel["feature_set_id"])
    version = sel["table_versions"][fs.lance_table]
    epochs, weights = list(sel["checkpoints"]), [float(w) for w in sel["weights"]]
    val_keys: dict[str, list[str]] = params["validation_examples"]
    names = _example_names(ws, sel, val_keys)

    every_val = sorted({k for ks in val_keys.values() for k in ks})
    val = _vectors(ws, fs, version, "validation", epochs, every_val)
    cand = _vectors(ws, fs, version, "candidate", epochs, [m["candidate_id"] for m in members])
    out = []
    for m in members:
        cid = m["candidate_id"]
        subtasks = []
        for s, keys in val_keys.items():
            parts, contrib = [], np.zeros(len(keys))
            for e, w in zip(epochs, weights):
                x = _unit(cand[(cid, e)])
                u = np.stack([_unit(val[(k, e)]) for k in keys])        # [n, d] unit validation gradients
                cos_each = u @ x
                if aggregation == "paper":
                    g = u.mean(axis=0)
                    gn = np.linalg.norm(g)
                    cos = float(g @ x / gn)
                    contrib += w * cos_each / (len(keys) * gn)
                else:
                    cos = float(cos_each.mean())
                    contrib += w * cos_each / len(keys)
                parts.append({"epoch": e, "weight": w, "cosine": cos, "part": w * cos})
            order = np.argsort(-contrib, kind="stable")[:top_examples]
            subtasks.append({"subtask": s, "influence": float(sum(p["part"] for p in parts)), "checkpoints": parts,
                             "top_examples": [{"example_key": keys[i], "example": names.get(keys[i].split("@")[0]),
                                               "contribution": float(contrib[i])} for i in order]})
        subtasks.sort(key=lambda d: (-d["influence"], d["subtask"]))
        out.append({"rank": m["rank"], "candidate_id": cid, "recorded_score": m["score"],
                    "best_subtask": m["best_subtask"], "explained_score": subtasks[0]["influence"],
                    "subtasks": subtasks})
    result = {"selection_id": sel["selection_id"], "name": sel["name"], "method": sel["method"],
              "aggregation": aggregation, "checkpoints": epochs, "weights": weights, "members": out}
    if store:
        meta_explain.store_explanations(ws, sel["selection_id"], out)
    return result


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    n = np.linalg.norm(v)
    return v / n if n > 0 else v


def _vectors(ws, fs, version: int, role: str, epochs: list[int], keys: list[str]) -> dict:
    """{(example key, epoch): vector} — the first stored row of each, as scoring reads them."""
    from ..storage.features import vector_view

    out: dict = {}
    for start in range(0, len(keys), 512):
        for batch in meta.scan_feature_rows(ws, fs.lance_table, version, role, epochs, keys[start:start + 512]):
            vecs = vector_view(batch.column("vector"), fs.dim)
            for i, (k, e) in enumerate(zip(batch.column("example_id").to_pylist(),
                                           batch.column("epoch").to_pylist())):
                out.setdefault((k, e), np.array(vecs[i], dtype=np.float64))
    missing = [(k, e) for k in keys for e in epochs if (k, e) not in out]
    if missing:
        raise LessdbError(f"feature set {fs.feature_set_id} has no {role} vector for {missing[0][0]} at checkpoint "
                          f"{missing[0][1]} in the version the selection read")
    return out


def _example_names(ws, sel: dict, val_keys: dict) -> dict[str, str]:
    """validation key -> "task example id" where it can be told (keys are content hashes of the messages)."""
    from ..tasks.catalog import load_task_version
    from ..conversation import content_hash

    targets = (sel["params"] or {}).get("targets") or [{"task": sel["task"], "task_hash": sel["task_hash"]}]
    names = {}
    for t in targets:
        try:
            task = load_task_version(ws, t["task_hash"], t["task"])
        except LessdbError:
            continue
        for eid, msgs in task.examples():
            names[content_hash(msgs)] = eid
    return names


def format_explanation(result: dict, subtasks: int = 3) -> str:
    lines = [f"{result['selection_id']}" + (f" ({result['name']})" if result["name"] else "") +
             f": {result['method']}, {result['aggregation']} aggregation, checkpoints {result['checkpoints']} "
             f"with eta-bar {['%.3g' % w for w in result['weights']]}"]
    for m in result["members"]:
        lines += ["", f"#{m['rank']} {m['candidate_id']}  score {m['recorded_score']:.6g} "
                      f"(recomputed {m['explained_score']:.6g}) best subtask {m['best_subtask']}"]
        for s in m["subtasks"][:subtasks]:
            parts = " + ".join(f"{p['weight']:.3g}×{p['cosine']:.4f}" for p in s["checkpoints"])
            lines.append(f"  {s['subtask']:<36} {s['influence']:.6g} = {parts}")
            for ex in s["top_examples"]:
                lines.append(f"      {ex['contribution']:+.6g}  {ex['example'] or ex['example_key']}")
    return "\n".join(lines)
