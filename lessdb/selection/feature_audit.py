"""What `select`, `show` and `report` say about a selection's targets, token budget and skipped
near-duplicates (pure formatting over the recorded params and the 0009 tables)."""
from __future__ import annotations


def selection_feature_lines(params: dict) -> list[str]:
    """Summary lines from a selection's recorded params (nothing for a classic selection)."""
    lines = []
    picking = params.get("picking") or {}
    targets = params.get("targets") or []
    if targets:
        counts = params.get("target_counts") or {}
        parts = [f"{t['task']}" + (f" (weight {t['weight']:g})" if t.get("weight", 1) != 1 else "") +
                 f": {counts.get(t['task'], 0):,}" for t in targets]
        lines.append(f"targets ({picking.get('balance', 'max')}): " + ", ".join(parts))
    budget = params.get("budget")
    if budget:
        lines.append(f"token budget: {budget.get('tokens_used', 0):,} of {budget['max_tokens']:,} "
                     f"{budget['budget_on']} tokens used (stopped by {budget.get('stopped_by')}; tokenizer "
                     f"{budget.get('tokenizer_id')}, window {budget.get('max_seq_length')})")
    dedup = params.get("dedup")
    if dedup:
        skipped = params.get("skipped") or {}
        lines.append("near-duplicates skipped: " + (", ".join(f"{n:,} {r}" for r, n in skipped.items()) or "none")
                     + " (" + ", ".join(f"{k} > {v}" for k, v in dedup.items() if k in ("feature_cosine",
                                                                                       "text_jaccard")) + ")")
    diag = params.get("diagnostics")
    if diag and diag.get("gap_in_noise_sd") is not None:
        lines.append(f"k-th score is {diag['gap_in_noise_sd']:.2f} sketch-noise sd above the median "
                     f"(d = {diag['dim']}; `lessdb diagnose` for more)")
        if diag.get("warning"):
            lines.append("WARNING: " + diag["warning"])
    lines += prefilter_lines(params)
    short = params.get("short_of_k")
    if short:
        lines.append(f"only {short['selected']:,} of k = {short['k']:,} could be selected "
                     f"(stopped by {short['stopped_by']})")
    return lines


def prefilter_lines(params: dict) -> list[str]:
    pf = params.get("prefilter")
    if not pf:
        return []
    return [f"prefilter {pf['low_dim']}x{pf['factor']}: every candidate scored at d={pf['low_dim']} "
            f"({pf['folded_table']}), the best {pf.get('shortlist', 0):,} rescored at full d "
            f"({pf.get('full_rows_read', 0):,} full rows read); scores shown are the full-d ones"]


def show_extras(ws, selection_id: str) -> dict:
    from ..storage import meta_selection_extras as extras

    skips = extras.skips(ws, selection_id)
    return {"targets": extras.target_counts(ws, selection_id), "n_skipped": len(skips), "skipped_head": skips[:10]}


def format_extras(report: dict) -> list[str]:
    lines = []
    targets = report.get("targets") or []
    if targets:
        lines += ["", "Members per target:  n / mean score / min score" +
                  (" / budget tokens" if any(t["budget_tokens"] is not None for t in targets) else "")]
        for t in targets:
            lines.append(f"  {str(t['target']):<24} {t['n']:>8,}  {t['mean_score']:.6g}  {t['min_score']:.6g}"
                         + ("" if t["budget_tokens"] is None else f"  {t['budget_tokens']:,}"))
    if report.get("n_skipped"):
        lines += ["", f"Skipped near-duplicates: {report['n_skipped']:,} (first ones; all in selection_skips)"]
        for s in report["skipped_head"]:
            lines.append(f"  {s['candidate_id']}  {s['reason']}  similarity {s['similarity']:.4f} "
                         f"to {s['similar_to']}")
    return lines
