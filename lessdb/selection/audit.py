"""Auditing recorded selections: `lessdb selections`, `lessdb show`, `lessdb diff` (SPEC §3–4).

All numbers come from DuckDB (the `selection_audit` view joins members with candidate metadata, read at the
candidates version the selection used), so an analyst can reproduce any of them in `lessdb sql`.
"""
from __future__ import annotations

from ..storage import meta_selections as meta
from ..storage.lance_tables import CANDIDATES
from .feature_audit import format_extras, prefilter_lines, show_extras


def list_selections(ws) -> list[dict]:
    """One summary row per selection, oldest first."""
    out = []
    for s in meta.list_selections(ws):
        out.append({"selection_id": s["selection_id"], "name": s["name"], "task": s["task"], "method": s["method"],
                    "pool": (s["params"] or {}).get("pool"), "k": s["k"], "percentage": s["percentage"],
                    "n_scored": s["n_scored"], "n_unscorable": s["n_unscorable"], "run_id": s["run_id"],
                    "feature_set_id": s["feature_set_id"], "sql_filter": s["sql_filter"],
                    "replay_of": s["replay_of"], "created_at": s["created_at"]})
    return out


def show_selection(ws, ref: str, top: int = 10) -> dict:
    """Size, provenance, source mix and length stats vs the filtered pool, score histogram, top members."""
    sel = meta.get_selection(ws, ref)
    version = (sel["table_versions"] or {}).get(CANDIDATES)
    params = sel["params"] or {}
    return {
        "selection": {k: sel[k] for k in meta.SELECTION_COLUMNS if k != "params"},
        "params": {k: v for k, v in params.items() if k not in ("score_histogram", "validation_examples")},
        "size": sel["k"],
        "n_candidates": params.get("n_candidates"),
        "source_mix": meta.source_mix(ws, sel),
        "lengths": meta.length_stats(ws, sel),
        "score_histogram": params.get("score_histogram"),
        "top": meta.audit_rows(ws, sel["selection_id"], version, limit=top),
        "exports": meta.list_exports(ws, sel["selection_id"]),
        **show_extras(ws, sel["selection_id"]),
        "compute": selection_compute(ws, sel),
        "validations": validation_summaries(ws, sel["selection_id"]),
    }


def selection_compute(ws, sel: dict) -> dict:
    """The compute recorded for the stages that produced a selection (seconds on its device; examples): its
    warmup run, its gradient feature set's jobs (candidates and validation examples), its RDS/RDS+ embedding
    feature set's jobs, and the select command itself (recorded in its params since issue 22). Stages that are
    shared (one warmup and feature set serve many selections) are counted whole: the cost of making this
    selection from scratch."""
    from ..storage import meta_runs, meta_validations

    params = sel.get("params") or {}
    stages: dict[str, dict] = {}
    if sel.get("run_id"):
        run = meta_runs.get_run(ws, sel["run_id"])
        stages["warmup"] = {"seconds": meta_validations.run_seconds(ws, [sel["run_id"]]).get(sel["run_id"]),
                            "examples": run.get("n_examples"), "device": run.get("device")}
    if sel.get("feature_set_id"):
        for role, v in meta_validations.feature_set_seconds(ws, sel["feature_set_id"]).items():
            stages[f"featurize ({role})"] = v
    embedded = (params.get("rds") or {}).get("feature_set_id")
    if embedded:
        for role, v in meta_validations.feature_set_seconds(ws, embedded).items():
            stages[f"embed ({role})"] = v
    compute = params.get("compute") or {}
    if compute.get("select_seconds") is not None:
        stages["select"] = {"seconds": compute["select_seconds"], "examples": params.get("n_candidates")}
    return {"stages": stages, "seconds": sum(v.get("seconds") or 0.0 for v in stages.values()),
            "recorded": "select" in stages}


def validation_summaries(ws, selection_id: str) -> list[dict]:
    """`lessdb validate`'s verdicts on this selection (newest last) and its selection-to-tuning ratio."""
    from ..storage.meta_validations import list_validations

    out = []
    for v in list_validations(ws, selection_id):
        cost = v.get("cost") or {}
        out.append({"validation_id": v["validation_id"], "status": v["status"], "task": v["task"],
                    "seeds": (v.get("config") or {}).get("seeds"), "preset": (v.get("config") or {}).get("preset"),
                    "n_items": (v.get("items") or {}).get("n_items"), "lines": [r["line"] for r in v["results"]],
                    "selection_compute_seconds": (cost.get("selection_compute") or {}).get("seconds"),
                    "selection_to_tuning_ratio": cost.get("selection_to_tuning_ratio")})
    return out


def diff_selections(ws, ref_a: str, ref_b: str, examples: int = 5) -> dict:
    """Overlap, Jaccard, and what each selection has that the other lacks (count, source mix, examples)."""
    a, b = meta.get_selection(ws, ref_a), meta.get_selection(ws, ref_b)
    ma = meta.selection_members(ws, a["selection_id"])
    mb = meta.selection_members(ws, b["selection_id"])
    ids_a = ma.column("candidate_id").to_pylist()
    ids_b = mb.column("candidate_id").to_pylist()
    set_a, set_b = set(ids_a), set(ids_b)
    both = set_a & set_b
    union = set_a | set_b
    meta_a = meta.member_metadata(ws, a["selection_id"], (a["table_versions"] or {}).get(CANDIDATES))
    meta_b = meta.member_metadata(ws, b["selection_id"], (b["table_versions"] or {}).get(CANDIDATES))

    def only(ids: list[str], other: set[str], info: dict) -> dict:
        rest = [i for i in ids if i not in other]   # in rank order
        mix: dict[str, int] = {}
        for i in rest:
            src = (info.get(i) or {}).get("source_dataset")
            mix[str(src)] = mix.get(str(src), 0) + 1
        lengths = [(info.get(i) or {}).get("total_chars") for i in rest]
        lengths = [x for x in lengths if x is not None]
        return {"n": len(rest), "source_mix": dict(sorted(mix.items(), key=lambda kv: -kv[1])),
                "mean_total_chars": (sum(lengths) / len(lengths)) if lengths else None,
                "examples": rest[:examples]}

    rank_a = {c: r for r, c in enumerate(ids_a, 1)}
    rank_b = {c: r for r, c in enumerate(ids_b, 1)}
    return {
        "a": {"selection_id": a["selection_id"], "name": a["name"], "method": a["method"], "task": a["task"],
              "k": a["k"]},
        "b": {"selection_id": b["selection_id"], "name": b["name"], "method": b["method"], "task": b["task"],
              "k": b["k"]},
        "overlap": len(both),
        "jaccard": len(both) / len(union) if union else 1.0,
        "only_a": only(ids_a, set_b, meta_a),
        "only_b": only(ids_b, set_a, meta_b),
        "identical_ranking": ids_a == ids_b,
        "mean_abs_rank_shift": (sum(abs(rank_a[c] - rank_b[c]) for c in both) / len(both)) if both else None,
    }


# -- terminal rendering (pure formatting; the CLI prints it) ----------------------------------------------------
def histogram_lines(hist: dict | None, width: int = 40) -> list[str]:
    """A terminal bar chart of the scored pool's score histogram; bins at or above the selection threshold
    are drawn with '#', the rest with '.'."""
    if not hist or not hist.get("counts"):
        return []
    counts, edges, thr = hist["counts"], hist["edges"], hist["threshold"]
    peak = max(counts) or 1
    lines = []
    for c, lo, hi in zip(counts, edges[:-1], edges[1:]):
        bar = ("#" if hi > thr else ".") * max(1 if c else 0, round(width * c / peak))
        lines.append(f"{lo:>12.5g} .. {hi:<12.5g} {c:>8,} {bar}")
    lines.append(f"selection threshold (k-th score): {thr:.6g}; '#' bins hold selected candidates")
    return lines


def format_show(report: dict) -> str:
    sel = report["selection"]
    p = report["params"]
    lines = [f"{sel['selection_id']}" + (f" ({sel['name']})" if sel["name"] else "") +
             f": {sel['method']} on task {sel['task']} [{sel['task_hash']}], pool {p.get('pool')}",
             f"  k = {sel['k']:,} of {sel['n_scored']:,} scored candidates"
             + (f" (p = {sel['percentage']})" if sel["percentage"] is not None else "")
             + f"; {sel['n_unscorable']:,} unscorable of {report['n_candidates'] or 0:,} after the filter",
             f"  filter: {sel['sql_filter'] or '(none)'}",
             f"  run {sel['run_id']}, feature set {sel['feature_set_id']}, checkpoints {sel['checkpoints']}, "
             f"weights {sel['weights']}",
             f"  sketch {sel['sketch']}",
             f"  table versions {sel['table_versions']}, seed {sel['seed']}, lessdb {sel['lessdb_version']}, "
             f"created {sel['created_at']}" + (f", replay of {sel['replay_of']}" if sel["replay_of"] else ""),
             *("  " + line for line in prefilter_lines(p)),
             "", "Source mix (selection vs filtered pool):"]
    for r in report["source_mix"]:
        lines.append(f"  {str(r['source_dataset']):<32} {r['n_selected']:>8,} {100 * (r['share_selected'] or 0):6.1f}%"
                     f"   pool {r['n_pool']:>9,} {100 * (r['share_pool'] or 0):6.1f}%")
    lines += ["", "Lengths (selection vs pool):  mean / median / p10 / p90"]
    for r in report["lengths"]:
        vals = " / ".join("-" if r[k] is None else f"{r[k]:,.0f}" for k in ("mean", "median", "p10", "p90"))
        lines.append(f"  {r['column']:<18} {r['set']:<10} {vals}")
    hist = histogram_lines(report["score_histogram"])
    if hist:
        lines += ["", "Scores of all scored candidates:"] + ["  " + h for h in hist]
    if report["top"]:
        lines += ["", "Top members:"]
        for r in report["top"]:
            lines.append(f"  {r['rank']:>5}  {r['score']:.6g}  {r['candidate_id']}  {r['source_dataset']}  "
                         f"{r['total_chars']:,} chars" + (f"  [{r['best_subtask']}]" if r["best_subtask"] else ""))
    lines += format_extras(report)
    for e in report["exports"]:
        lines.append(f"exported: {e['path']} ({e['format']}, {e['n_rows']:,} rows, sha256 {e['sha256'][:16]}…)")
    compute = report.get("compute") or {}
    if compute.get("stages"):
        lines += ["", "Compute that made it (seconds): " + ", ".join(
            f"{name} {v['seconds']:.0f}" for name, v in compute["stages"].items() if v.get("seconds") is not None)
            + f"; total {compute['seconds']:.0f}" + ("" if compute.get("recorded") else
                                                     " (select's own time not recorded: selected before issue 22)")]
    for v in report.get("validations") or []:
        lines += ["", f"Validation {v['validation_id']} ({v['status']}): {v['n_items']} held-out {v['task']} items, "
                      f"{v['seeds']} training seeds, preset {v['preset']}"]
        lines += [f"  {line}" for line in v["lines"]]
        if v.get("selection_to_tuning_ratio") is not None:
            lines.append(f"  selection-to-tuning ratio {v['selection_to_tuning_ratio']:.2f} (selection compute "
                         f"{v['selection_compute_seconds']:.0f}s vs one training run on it)")
    return "\n".join(lines)


def format_diff(d: dict) -> str:
    a, b = d["a"], d["b"]
    lines = [f"A = {a['selection_id']} ({a['method']}, {a['task']}, k={a['k']:,})",
             f"B = {b['selection_id']} ({b['method']}, {b['task']}, k={b['k']:,})",
             f"overlap {d['overlap']:,}   Jaccard {d['jaccard']:.4f}   identical ranking: {d['identical_ranking']}"]
    for label, part in (("only in A", d["only_a"]), ("only in B", d["only_b"])):
        mix = ", ".join(f"{k}: {v}" for k, v in list(part["source_mix"].items())[:8])
        mean = "-" if part["mean_total_chars"] is None else f"{part['mean_total_chars']:,.0f}"
        lines.append(f"{label}: {part['n']:,} (mean {mean} chars; {mix or 'none'})")
        for cid in part["examples"]:
            lines.append(f"    {cid}")
    return "\n".join(lines)
