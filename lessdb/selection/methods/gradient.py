"""LESS and its gradient ablations: cosine (or raw dot product) of each candidate's stored low-dimensional
gradient feature with the task's validation gradients, weighted by each checkpoint's mean learning rate and
summed over checkpoints (SPEC §1 Step 3).

- less: Adam-preconditioned candidate gradients; sgd / sign: plain or sign gradients (ablations);
- unnormalized: less without the row normalisation (dot products; the paper's length-bias ablation).
"""
from __future__ import annotations

import numpy as np

from ...errors import LessdbError
from ...settings import SettingError, ref
from ..config import SelectConfig
from ..plan import metadata_reads, validation_window, window_hint
from . import Scores, register_method


def prepare(ws, plan, cfg, run) -> None:
    """Checkpoints and their weights (each checkpoint's mean learning rate), the validation token window and
    the two-stage prefilter, if asked for."""
    plan.params["aggregation"] = plan.aggregation
    plan_checkpoints(ws, plan, cfg.checkpoints)
    plan.params["validation_window"] = validation_window(cfg, plan.fs.max_seq_length)
    if getattr(cfg, "prefilter", None):
        from ..two_stage import plan_prefilter

        plan.params["prefilter"] = plan_prefilter(plan, cfg.prefilter)


def prepare_unnormalized(ws, plan, cfg, run) -> None:
    plan.aggregation = "dot"
    prepare(ws, plan, cfg, run)


def plan_checkpoints(ws, plan, wanted: list[int] | None) -> None:
    from ...storage import meta_runs

    ckpts = {c.epoch: c for c in meta_runs.list_checkpoints(ws, plan.run_id)}
    if not ckpts:
        raise LessdbError(f"run {plan.run_id} has no checkpoints")
    epochs = sorted(wanted) if wanted else sorted(ckpts)
    missing = [e for e in epochs if e not in ckpts]
    if missing:
        raise LessdbError(f"run {plan.run_id} has no checkpoint {missing} (it has {sorted(ckpts)})")
    plan.epochs = epochs
    plan.weights = [float(ckpts[e].mean_lr) for e in epochs]


def gradient_scores(ws, plan, ids: list[str]) -> Scores:
    """Per-subtask scores of every filtered candidate from the plan's feature set (one streamed scan per
    checkpoint); validation features are computed and cached on first use, read back from the pinned version."""
    from ...featurize.validation import settle_validation_jobs, validation_key, validation_missing
    from ...progress import Progress
    from ...storage import meta_selections as meta
    from ..reading import IdIndex, candidate_batches, read_validation
    from ..scoring import ScoreAccumulator, build_queries

    fs, opts = plan.fs, plan.options
    replaying = plan.replaying
    table = fs.lance_table
    dot = plan.aggregation == "dot"
    columns = meta.feature_table_columns(ws, table)
    raw_vectors = (fs.params or {}).get("normalized") is False
    if dot and not raw_vectors and "norm" not in columns:
        raise SettingError(SelectConfig, [("method", "unnormalized needs raw gradient norms, but feature set "
                                                     f"{fs.feature_set_id} stores only unit vectors (its table has "
                                                     "no `norm` column: it was made by an older lessdb); featurize "
                                                     f"into a new feature set (`lessdb featurize --run {fs.run_id}` "
                                                     "with the same options now writes one with norms) and select "
                                                     f"with {ref('feature_set')}")])
    row_scale = "inverse_norm" if not dot else ("none" if raw_vectors else "given")
    plan.params["row_scale"] = row_scale
    plan.params["grad_kind"] = fs.grad_kind

    # 1. validation features (plain gradients, same sketch), computed and cached on first use
    window = plan.params.get("validation_window") or {"max_seq_length": fs.max_seq_length, "truncation": "right"}
    wanted_val = plan.params.get("validation_examples") if replaying else None
    if not replaying:
        from ...storage.meta_integrity import require_versions_present

        require_versions_present(ws, table)   # a lost newest manifest: writing would reuse its version number
        examples = _unique_examples(plan.subtasks)
        with metadata_reads(ws):   # usually all cached: find out with cheap reads before computing anything
            missing = [e for e in plan.epochs
                       if validation_missing(ws, fs.feature_set_id, e, examples, **window)]
        for epoch in missing:
            compute_validation_features(ws, fs.feature_set_id, epoch, examples, **window)
        settle_validation_jobs(ws, fs.feature_set_id, plan.epochs)   # rows a killed fill left `running`
        plan.versions[table] = ws.lance.version(table)
    version = plan.versions[table]

    # 2. read them back from the pinned version (so a replay reads exactly these bytes)
    val_vecs, val_norms = read_validation(ws, table, version, plan.epochs, fs.dim, row_scale == "given",
                                          opts.batch_rows)
    # the featurizer caches validation rows under the content hash of the messages
    usable: dict[str, list[str]] = {}
    dropped = []
    for s, exs in plan.subtasks.items():
        eids = [validation_key(m, fs.max_seq_length, window["max_seq_length"], window["truncation"]) for _, m in exs]
        eids = [eid for eid in eids if all(eid in val_vecs[e] for e in plan.epochs)]
        if wanted_val is not None:
            eids = [eid for eid in eids if eid in set(wanted_val.get(s, []))]
        if eids:
            usable[s] = eids
        else:
            dropped.append(s)
    if not usable:
        n_examples = sum(len(v) for v in plan.subtasks.values())
        raise SettingError(SelectConfig, f"task {plan.task_name}: none of its {n_examples} validation examples "
                                         f"has a completion token left after {window['truncation']} truncation to "
                                         f"{window['max_seq_length']} tokens (or their features are missing); "
                                         f"nothing to score against; {window_hint(window)}")
    plan.params["validation_examples"] = usable
    if dropped:
        plan.params["dropped_subtasks"] = dropped
        plan.params.setdefault("_notes", []).append(
            f"{len(dropped)} subtask(s) have no usable validation example and were skipped: {', '.join(dropped)}")
    validation = {e: {s: np.stack([val_vecs[e][eid] for eid in usable[s]]) for s in usable} for e in plan.epochs}
    norms = None
    if row_scale == "given":
        norms = {e: {s: np.array([val_norms[e][eid] for eid in usable[s]]) for s in usable} for e in plan.epochs}
        for e in plan.epochs:
            _require_norms(np.concatenate(list(norms[e].values())), fs)
    weights = dict(zip(plan.epochs, plan.weights))
    queries = build_queries(validation, weights, plan.aggregation, norms=norms)
    if plan.params.get("prefilter"):   # score at the folded low d first, rescan the shortlist at full d
        from ..two_stage import two_stage_scores

        return two_stage_scores(ws, plan, ids, usable, weights, queries, row_scale,
                                check_norms=lambda n: _require_norms(n, fs))

    # 3. stream candidate features: one pinned scan per checkpoint, one GEMM per batch; the scan (and the id
    #    lookup, and the float16 -> float32 conversion) runs ahead in a thread while BLAS multiplies
    present = set(meta.feature_epochs(ws, table, version))
    absent = [e for e in plan.epochs if e not in present]
    if absent:
        raise SettingError(SelectConfig, f"feature set {fs.feature_set_id} has no candidate features for "
                                         f"checkpoint(s) {absent}; "
                          f"run `lessdb featurize --run {plan.run_id}` or pass {ref('checkpoints')}")
    id_index = IdIndex(ids)
    acc = ScoreAccumulator(len(ids), queries, row_scale=row_scale, batch_rows=opts.batch_rows)
    cols = ("example_id", "vector") + (("norm",) if row_scale == "given" else ())
    progress = Progress(f"scoring {plan.method}", total=len(ids) * len(plan.epochs), unit="rows",
                        enabled=None if opts.progress else False)

    if opts.engine == "ray":   # the same products, computed fragment by fragment on the cluster
        from ..ray_scoring import score_ray
        score_ray(ws, table, version, plan.epochs, cols, queries, acc, id_index, fs.dim, opts.batch_rows,
                  opts.ray_address, progress, check_norms=lambda n: _require_norms(n, fs))
    else:
        acc.add_stream(candidate_batches(ws, table, version, plan.epochs, cols, id_index, fs.dim, opts.batch_rows,
                                         check_norms=lambda n: _require_norms(n, fs)), on_batch=progress.update)
    progress.close()
    res = acc.result()
    missing = int((~acc.seen.all(axis=1)).sum())
    excluded = plan.candidate_exclusions
    no_completion = sum(1 for i in np.flatnonzero(~acc.seen.all(axis=1)) if ids[i] in excluded)
    unscorable = {"no_completion_tokens": no_completion, "missing_features": missing - no_completion,
                  "zero_gradient": int((acc.zero_norm & acc.seen.all(axis=1)).sum()),
                  "duplicate_rows_ignored": acc.n_duplicates}
    return Scores(res.per_subtask, res.valid, res.subtasks, unscorable)


# method -> (gradient kind of its features, planning, help); one scorer serves all four
GRADIENT_METHODS = {
    "less": ("adam", prepare, "LESS: Adam-preconditioned gradient features, cosine with the task's gradients"),
    "sgd": ("sgd", prepare, "ablation: plain (SGD) gradient features"),
    "sign": ("sign", prepare, "ablation: sign gradient features"),
    "unnormalized": ("adam", prepare_unnormalized, "ablation: LESS without normalisation (dot products)"),
}
for _name, (_kind, _prepare, _help) in GRADIENT_METHODS.items():
    register_method(_name, help=_help, needs_run=True, feature_kind=_kind, feature_required=True,
                    prepare=_prepare)(gradient_scores)


def _require_norms(norms: np.ndarray, fs) -> None:
    """A row written without a raw norm (null, read as NaN; featurize never stores a non-finite one) cannot be
    scored unnormalised. Checked on the rows used only: rows outside the filter do not matter."""
    missing = int(np.isnan(norms).sum())
    if missing:
        raise SettingError(SelectConfig, [("method", f"unnormalized needs raw gradient norms, but {missing} row(s) "
                                                     f"of feature set {fs.feature_set_id} were stored without one "
                                                     "(not by `lessdb featurize`); featurize into a new feature set "
                                                     f"and select with {ref('feature_set')}")])


def compute_validation_features(ws, feature_set_id: str, epoch: int, examples: list,
                                max_seq_length: int | None = None, truncation: str = "right") -> None:
    """Make sure the task's validation features (plain gradients, the feature set's sketch) are stored; they
    are cached in the feature table (role "validation"), so a second selection for the task computes nothing."""
    from ... import featurize

    featurize.validation_features(ws, feature_set_id, epoch, examples, max_seq_length=max_seq_length,
                                  truncation=truncation, progress=True)


def _unique_examples(subtasks: dict[str, list[tuple[str, list[dict]]]]) -> list[tuple[str, list[dict]]]:
    seen, out = set(), []
    for exs in subtasks.values():
        for eid, msgs in exs:
            if eid not in seen:
                seen.add(eid)
                out.append((eid, msgs))
    return out


__all__ = ["gradient_scores", "compute_validation_features", "plan_checkpoints", "GRADIENT_METHODS"]
