"""`select --prefilter LOWDxFACTOR`: two-stage scoring of a gradient method for huge stores (issue 14 item 6).

Stage one scores every filtered candidate on the feature set's folded copy at d' = LOWD (lessdb.featurize.folding),
with the same optimizer-aware cosine as the full path: the candidates' stored (Adam-preconditioned) vectors and
the task's (SGD) validation vectors, both folded, through the same `build_queries` and `ScoreAccumulator` (so
rows and queries are normalised at d' exactly as they are at d). Stage two rescans only the best FACTOR·k
candidates (per target, for several targets) at full d, by row address, at the pinned full version, and scores
them exactly as the full path does: their scores are bit-identical to a plain selection's, and a candidate of
the exhaustive top k is missed only if stage one ranked it below FACTOR·k. Candidates outside the shortlist
count as scored (k = p·N is the plain selection's k) but are never selected. A shortlist that covers every
candidate gives exactly the plain selection.
"""
from __future__ import annotations

import numpy as np

from ..errors import LessdbError, ref
from ..featurize.folding import fold


def plan_prefilter(plan, text) -> dict:
    """The recorded prefilter setting, checked against the plan (its feature set, k, method family)."""
    from ..featurize.folding import check_foldable, parse_prefilter
    from ..storage.folded_copies import folded_table_name

    from ..settings import SettingError
    from .config import SelectConfig

    try:
        low, factor = parse_prefilter(text)
        check_foldable(plan.fs, low)
    except (ValueError, LessdbError) as exc:
        raise SettingError(SelectConfig, [("prefilter", str(exc))]) from None
    if plan.count is None and plan.percentage is None:
        raise SettingError(SelectConfig, [("prefilter", f"needs {ref('count')} or {ref('percentage')}: a token "
                                                        "budget alone does not say how many candidates to rescan "
                                                        "at full d")])
    return {"low_dim": low, "factor": factor, "folded_table": folded_table_name(plan.fs.feature_set_id, low)}


def two_stage_scores(ws, plan, ids: list[str], usable: dict[str, list[str]], weights: dict[int, float],
                     queries, row_scale: str, check_norms):
    """Scores of `ids` as `gradient_scores` returns them, with only the shortlist rescored at full d."""
    from ..progress import Progress
    from ..featurize.folding import sync_folded
    from ..storage import meta_selections as meta
    from ..storage.features import vector_view
    from .methods import Scores
    from .reading import IdIndex, candidate_batches, read_validation
    from .scoring import ScoreAccumulator, build_queries

    fs, opts, pf = plan.fs, plan.options, plan.params["prefilter"]
    low, factor, name = int(pf["low_dim"]), int(pf["factor"]), pf["folded_table"]
    if not plan.replaying:   # bring the folded copy up to the pinned full version (made on first use)
        plan.versions[name] = sync_folded(ws, fs, low, plan.versions[fs.lance_table],
                                          progress=opts.progress)["lance_version"]
    low_version = plan.versions[name]
    given = row_scale == "given"

    # stage one: the same queries, folded, against every candidate's folded vector
    vecs, norms = read_validation(ws, name, low_version, plan.epochs, low, given, opts.batch_rows)
    validation = {e: {s: np.stack([vecs[e][eid] for eid in eids]) for s, eids in usable.items()} for e in plan.epochs}
    scales = ({e: {s: np.array([norms[e][eid] for eid in eids]) for s, eids in usable.items()} for e in plan.epochs}
              if given else None)
    low_queries = build_queries(validation, weights, plan.aggregation, norms=scales)
    id_index = IdIndex(ids)
    coarse = ScoreAccumulator(len(ids), low_queries, row_scale=row_scale, batch_rows=opts.batch_rows)
    cols = ("example_id", "vector") + (("norm",) if given else ())
    progress = Progress(f"scoring {plan.method} at d={low}", total=len(ids) * len(plan.epochs), unit="rows",
                        enabled=None if opts.progress else False)
    if opts.engine == "ray":
        from .ray_scoring import score_ray
        score_ray(ws, name, low_version, plan.epochs, cols, low_queries, coarse, id_index, low, opts.batch_rows,
                  opts.ray_address, progress, check_norms=check_norms)
    else:
        coarse.add_stream(candidate_batches(ws, name, low_version, plan.epochs, cols, id_index, low, opts.batch_rows,
                                   check_norms), on_batch=progress.update)
    progress.close()
    rough = coarse.result()
    best = rough.per_subtask.max(axis=1)
    ok = rough.valid & np.isfinite(best)
    n_scored = int(ok.sum())
    if n_scored == 0:
        raise LessdbError(f"none of the {len(ids):,} candidates has folded features at d={low}")
    if plan.count is not None:
        k = min(plan.count, n_scored)
    else:
        from .record import percentage_base
        from .scoring import k_from_percentage
        k = min(n_scored, max(1, k_from_percentage(plan.percentage, percentage_base(plan.params, len(ids),
                                                                                     n_scored)[0])))
    shortlist = _shortlist(plan, rough, ok, ids, factor * k)

    # stage two: the shortlisted rows at full d, read by row address at the pinned full version
    rows_of = _source_rows(ws, name, low_version, plan.epochs, id_index, len(ids))
    exact = ScoreAccumulator(len(ids), queries, row_scale=row_scale, batch_rows=opts.batch_rows)
    full = ws.lance.dataset(fs.lance_table, plan.versions[fs.lance_table])
    take_cols = ["example_id", "epoch", "role", "vector"] + (["norm"] if given else [])
    read = 0
    for col, epoch in enumerate(plan.epochs):
        rows = shortlist[rows_of[shortlist, col] >= 0]
        rows = rows[np.argsort(rows_of[rows, col], kind="stable")]   # in stored order: coalesced reads
        for start in range(0, len(rows), opts.batch_rows):
            part = rows[start:start + opts.batch_rows]
            try:
                got = [full._take_rows(rows_of[part, col].astype(np.uint64).tolist(), columns=take_cols)]
            except (OSError, ValueError, RuntimeError):   # an address that no longer exists (rows deleted)
                got = [None]
            if got[0] is None or not _same_rows(got[0], [ids[r] for r in part], epoch):   # moved: read by id
                got = list(meta.scan_feature_rows(ws, fs.lance_table, plan.versions[fs.lance_table], "candidate",
                                                  [epoch], [ids[r] for r in part], columns=take_cols))
            for batch in got:
                scale = batch.column("norm").to_numpy(zero_copy_only=False) if given else None
                if scale is not None:
                    check_norms(scale)
                exact.add(epoch, id_index(batch.column("example_id")), vector_view(batch.column("vector"), fs.dim),
                          scale)
                read += batch.num_rows
    res = exact.result()
    short = np.zeros(len(ids), dtype=bool)
    short[shortlist] = True
    seen_all = coarse.seen.all(axis=1)
    excluded = plan.candidate_exclusions or set()
    no_completion = sum(1 for i in np.flatnonzero(~seen_all) if ids[i] in excluded)
    unscorable = {"no_completion_tokens": no_completion, "missing_features": int((~seen_all).sum()) - no_completion,
                  "zero_gradient": int((coarse.zero_norm & seen_all).sum()),
                  "duplicate_rows_ignored": coarse.n_duplicates}
    pf.update({"k": int(k), "shortlist": int(len(shortlist)), "coarse_rows": int(coarse.seen.sum()),
               "full_rows_read": int(read)})
    return Scores(res.per_subtask, res.valid & short, res.subtasks, unscorable,
                  n_coarse_only=int((ok & ~short).sum()))


def _shortlist(plan, rough, ok: np.ndarray, ids: list[str], n: int) -> np.ndarray:
    """Row numbers of the best `n` by stage-one score (per target when there are several), sorted."""
    from . import targets as tgt
    from .scoring import top_k

    names = [t["task"] for t in plan.params.get("targets", [])]
    per_target = (tgt.per_target_scores(rough.per_subtask, rough.subtasks, names) if len(names) > 1
                  else rough.per_subtask.max(axis=1)[:, None])
    picked = set()
    for t in range(per_target.shape[1]):
        picked.update(top_k(per_target[:, t], ids, min(n, int(ok.sum())), valid=ok).tolist())
    return np.array(sorted(picked), dtype=np.int64)


def _source_rows(ws, table, version, epochs, id_index, n: int) -> np.ndarray:
    """[n, checkpoints] full-table row address of each candidate's first folded row (-1: none)."""
    from ..storage import meta_selections as meta

    out = np.full((n, len(epochs)), -1, dtype=np.int64)
    for col, epoch in enumerate(epochs):
        for batch in meta.scan_features(ws, table, version, "candidate", epoch, ("example_id", "source_row"), 65536):
            rows = id_index(batch.column("example_id"))
            addr = batch.column("source_row").to_numpy(zero_copy_only=False).astype(np.int64)
            keep = rows >= 0
            rows, addr = rows[keep], addr[keep]
            _, first = np.unique(rows, return_index=True)
            rows, addr = rows[first], addr[first]
            fresh = out[rows, col] < 0
            out[rows[fresh], col] = addr[fresh]
    return out


def _same_rows(got, wanted_ids: list[str], epoch: int) -> bool:
    return (got.num_rows == len(wanted_ids) and got.column("example_id").to_pylist() == wanted_ids
            and set(got.column("epoch").to_pylist()) <= {epoch}
            and set(got.column("role").to_pylist()) <= {"candidate"})


# -- the algorithm in its plainest form, on in-memory arrays: a reference for tests and bench/scale.py (recall) --
def cosine_scores(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """max over query columns of cos(row, column): [n, d] x [d, m] -> [n] (float64)."""
    v = np.asarray(vectors, dtype=np.float32)
    q = np.asarray(queries, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1)
    qn = q / np.maximum(np.linalg.norm(q, axis=0, keepdims=True), 1e-30)
    s = (v @ qn).astype(np.float64) / np.maximum(norms, 1e-30)[:, None]
    return s.max(axis=1)


def two_stage_top_k(low_vectors: np.ndarray, queries: np.ndarray, k: int, factor: int, full_rows) -> dict:
    """Stage one on `low_vectors` [N, d'] with the folded queries; stage two calls `full_rows(indices)` ->
    [len, d] full vectors of the shortlist and ranks them exactly. Returns {top (indices), shortlist, scores}."""
    low_q = fold(np.ascontiguousarray(queries.T), low_vectors.shape[1]).T
    coarse = cosine_scores(low_vectors, low_q)
    n_short = min(len(coarse), factor * k)
    shortlist = np.argpartition(-coarse, n_short - 1)[:n_short] if n_short < len(coarse) else np.arange(len(coarse))
    shortlist = np.sort(shortlist)
    exact = cosine_scores(full_rows(shortlist), queries)
    order = np.lexsort((shortlist, -exact))[:k]
    return {"top": shortlist[order], "scores": exact[order], "shortlist": shortlist}
