"""What the audit pictures are drawn from: a recorded selection's members joined with candidate metadata, the
filtered pool it was drawn from, and — for gradient methods — every pool candidate's score recomputed from the
stored features at the recorded table versions, split per checkpoint (lessdb/selection/pool_scores.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..selection.pool_scores import RECOMPUTABLE, PoolScores, recompute_pool_scores
from ..storage import meta_report
from ..storage import meta_selections
from ..storage.candidates import read_candidates
from ..storage.lance_tables import CANDIDATES


@dataclass
class SelectionData:
    selection: dict                          # the recorded selections row (JSON columns decoded)
    members: list[dict]                      # rank order; candidate metadata + messages
    pool: list[dict]                         # filtered pool metadata (id, source_dataset, lengths)
    pool_scores: PoolScores | None = None    # gradient methods only
    notes: list[str] = field(default_factory=list)

    @property
    def selection_id(self) -> str:
        return self.selection["selection_id"]

    @property
    def label(self) -> str:
        s = self.selection
        return s["name"] or f"{s['method']} {s['selection_id']}"

    @property
    def threshold(self) -> float:
        """The k-th (lowest selected) score: the cut-off."""
        return float(self.members[-1]["score"]) if self.members else float("nan")

    @property
    def histogram(self) -> dict | None:
        return (self.selection.get("params") or {}).get("score_histogram")


def load_selection(ws, ref: str, pool_scores: bool = True) -> SelectionData:
    """A recorded selection (id, name or unique id prefix) with its members, its filtered pool, and (gradient
    methods, `pool_scores=True`) every pool candidate's recomputed score."""
    sel = meta_selections.get_selection(ws, ref)
    version = (sel["table_versions"] or {}).get(CANDIDATES)
    params = sel["params"] or {}
    members = meta_report.audit_members(ws, sel["selection_id"], version)
    pool = meta_report.pool_metadata(ws, params.get("pool"), sel.get("sql_filter"), version)
    data = SelectionData(sel, members, pool)
    if pool_scores:
        if sel["method"] in RECOMPUTABLE and sel.get("feature_set_id"):
            data.pool_scores = recompute_pool_scores(ws, sel)
        else:
            data.notes.append(f"{sel['method']}: only the members' scores are stored; the pool's score "
                              "distribution comes from the recorded 20-bin histogram")
    return data


# -- summaries (pure; from SelectionData) ------------------------------------------------------------------------
def source_mix(data: SelectionData) -> list[dict]:
    """Per source dataset: count and share in the selection and in the filtered pool, most selected first."""
    sel: dict[str, int] = {}
    pool: dict[str, int] = {}
    for r in data.members:
        sel[str(r["source_dataset"])] = sel.get(str(r["source_dataset"]), 0) + 1
    for r in data.pool:
        pool[str(r["source_dataset"])] = pool.get(str(r["source_dataset"]), 0) + 1
    n_sel, n_pool = max(sum(sel.values()), 1), max(sum(pool.values()), 1)
    rows = [{"source_dataset": s, "n_selected": sel.get(s, 0), "n_pool": pool.get(s, 0),
             "share_selected": sel.get(s, 0) / n_sel, "share_pool": pool.get(s, 0) / n_pool}
            for s in set(sel) | set(pool)]
    return sorted(rows, key=lambda r: (-r["n_selected"], -r["n_pool"], r["source_dataset"]))


def length_summary(values: list[float]) -> dict:
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if arr.size == 0:
        return {"n": 0, "mean": None, "median": None, "p10": None, "p90": None}
    return {"n": int(arr.size), "mean": float(arr.mean()), "median": float(np.median(arr)),
            "p10": float(np.quantile(arr, 0.1)), "p90": float(np.quantile(arr, 0.9))}


def completion_lengths(selections: list[SelectionData], include_pool: bool = True) -> dict[str, list[int]]:
    """label -> completion_chars of the members (and of the first selection's filtered pool)."""
    out: dict[str, list[int]] = {}
    if include_pool and selections:
        out["pool (all candidates)"] = [r["completion_chars"] for r in selections[0].pool]
    for d in selections:
        out[d.label] = [r["completion_chars"] for r in d.members]
    return out


def examples_per_subtask(ws, data: SelectionData, n: int = 2, max_chars: int = 400) -> list[dict]:
    """Top and bottom `n` examples per subtask with their text. With pool scores: the scored pool candidates
    with the highest and lowest influence Inf(z, Dʲ) on that subtask; otherwise the first and last members
    whose best subtask it is."""
    rows: list[dict] = []
    if data.pool_scores is not None:
        ps = data.pool_scores
        selected = {r["candidate_id"] for r in data.members}
        picks: list[tuple[str, str, int, float]] = []
        valid = np.flatnonzero(ps.valid)
        for j, s in enumerate(ps.subtasks):
            col = ps.per_subtask[:, j]
            idx = sorted(valid.tolist(), key=lambda i: (-col[i], ps.ids[i]))
            top = idx[:n]
            picks += [(s, "top", i, float(col[i])) for i in top]
            picks += [(s, "bottom", i, float(col[i])) for i in idx[-n:][::-1] if i not in top]
        version = (data.selection["table_versions"] or {}).get(CANDIDATES)
        wanted = sorted({ps.ids[i] for _, _, i, _ in picks})
        texts = {}
        if wanted:
            table = read_candidates(ws, wanted, data.selection["params"]["pool"], version,
                                    columns=["messages", "source_dataset", "completion_chars"])
            texts = {r["id"]: r for r in table.to_pylist()}
        for s, end, i, influence in picks:
            t = texts[ps.ids[i]]
            rows.append({"subtask": s, "end": end, "candidate_id": ps.ids[i], "score": influence,
                         "selected": ps.ids[i] in selected, "source_dataset": t["source_dataset"],
                         "completion_chars": t["completion_chars"], "text": conversation_text(t["messages"], max_chars)})
        return rows
    by_subtask: dict[str, list[dict]] = {}
    for r in data.members:
        by_subtask.setdefault(r["best_subtask"] or "*", []).append(r)
    for s, members in sorted(by_subtask.items()):
        picks2 = [("top", r) for r in members[:n]] + [("bottom", r) for r in members[n:][-n:][::-1]]
        for end, r in picks2:
            rows.append({"subtask": s, "end": end, "candidate_id": r["candidate_id"], "score": float(r["score"]),
                         "selected": True, "source_dataset": r["source_dataset"],
                         "completion_chars": r["completion_chars"], "text": conversation_text(r["messages"], max_chars)})
    return rows


def conversation_text(messages, max_chars: int = 400) -> str:
    """`role: content` lines, shortened to `max_chars` (for tables and the report)."""
    text = "\n".join(f"{m['role']}: {m['content']}" for m in messages or [])
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


# -- comparing selections ------------------------------------------------------------------------------------------
def selections_for_task(ws, task: str, pool: str | None = None) -> dict[str, str]:
    """method -> the newest original (not a replay) selection of that method for `task` (and pool)."""
    out: dict[str, str] = {}
    for s in meta_selections.list_selections(ws):     # oldest first: newer ones overwrite
        if s["task"] != task or s["replay_of"] or (pool and (s["params"] or {}).get("pool") != pool):
            continue
        out[s["method"]] = s["selection_id"]
    return out


def jaccard_matrix(ws, refs: list[str]) -> tuple[list[str], np.ndarray]:
    """Labels and the pairwise Jaccard overlap |A∩B| / |A∪B| of the selections' member sets."""
    sels = [meta_selections.get_selection(ws, r) for r in refs]
    ids = meta_report.member_ids(ws, [s["selection_id"] for s in sels])
    sets = [set(ids[s["selection_id"]]) for s in sels]
    mat = np.array([[len(a & b) / len(a | b) if (a | b) else 1.0 for b in sets] for a in sets])
    return [s["name"] or f"{s['method']} {s['selection_id']}" for s in sels], mat


def subtask_counts(ws, refs: list[str]) -> tuple[list[str], list[str], np.ndarray]:
    """Labels, subtasks and counts[selection, subtask] of members by best subtask ("(none)" for random)."""
    sels = [meta_selections.get_selection(ws, r) for r in refs]
    rows = meta_report.subtask_counts(ws, [s["selection_id"] for s in sels])
    subtasks = sorted({r["best_subtask"] or "(none)" for r in rows})
    index = {s["selection_id"]: i for i, s in enumerate(sels)}
    counts = np.zeros((len(sels), len(subtasks)), dtype=np.int64)
    for r in rows:
        counts[index[r["selection_id"]], subtasks.index(r["best_subtask"] or "(none)")] += r["n"]
    return [s["name"] or f"{s['method']} {s['selection_id']}" for s in sels], subtasks, counts


def checkpoint_contributions(data: SelectionData) -> list[dict]:
    """Per checkpoint: η̄, mean term η̄ᵢ·cos over the selected members and over the scored pool, the share of
    the members' total score, and how many of the top k that checkpoint alone would pick are members."""
    ps = data.pool_scores
    if ps is None:
        return []
    members = {r["candidate_id"] for r in data.members}
    sel_idx = np.array([i for i, c in enumerate(ps.ids) if c in members], dtype=np.int64)
    valid_idx = np.flatnonzero(ps.valid)
    k = len(members)
    total = ps.per_checkpoint[sel_idx].sum() if len(sel_idx) else 0.0
    out = []
    for c, (epoch, w) in enumerate(zip(ps.epochs, ps.weights)):
        col = ps.per_checkpoint[:, c]
        alone = valid_idx[np.lexsort((np.asarray(ps.ids, dtype=object)[valid_idx].astype(str),
                                      -col[valid_idx]))][:k]
        out.append({"checkpoint": epoch, "eta_bar": w,
                    "mean_term_selected": float(col[sel_idx].mean()) if len(sel_idx) else None,
                    "mean_term_pool": float(col[valid_idx].mean()) if len(valid_idx) else None,
                    "share_of_selected_score": float(col[sel_idx].sum() / total) if total else None,
                    "top_k_overlap": int(len(set(alone.tolist()) & set(sel_idx.tolist())))})
    return out
