"""`select(ws, SelectConfig)`: LESS step 3 as a recorded query — SQL filter over candidate metadata, then
streamed scoring of the remaining candidates, top k, and a selection row with everything needed to replay it
(SPEC §1 Step 3, §3). `replay(ws, ref)` re-runs a recorded selection against the table versions it read.

Every method (LESS, its ablations and the baselines) goes filter → per-subtask scores [N, m] → max over
subtasks → top k (ties by id) → record. A candidate that cannot be scored (no completion token, no feature)
gets no score and is never selected; the count is recorded.
"""
from __future__ import annotations

import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

from .. import __version__
from ..featurize.job import validation_key, validation_missing
from ..errors import LessdbError
from ..progress import Progress
from ..storage import meta_selections as meta
from ..storage.candidates import candidates_version, select_candidate_ids
from ..storage.features import vector_view
from ..storage.lance_tables import CANDIDATES
from . import baselines
from .scoring import ScoreAccumulator, build_queries, k_from_percentage, top_k

from ..choices import GRADIENT_METHODS, HIDDEN_METHODS, METHODS, TEXT_METHODS  # noqa: E402  (one source for --help)
DEFAULT_PERCENTAGE = 0.05


@dataclass
class SelectConfig:
    task: str | None = None
    method: str = "less"
    pool: str | None = None                 # default: the run's pool (or the only pool)
    run: str | None = None                  # default: the feature set's run, else the newest complete warmup
    feature_set: str | None = None          # default: the newest feature set of the run with the method's kind
    percentage: float | None = None         # k = ⌊p·N⌋ over the scored candidates (default 5%)
    count: int | None = None                # or an exact k
    where: str | None = None                # SQL boolean expression over `candidates` columns
    val_aggregation: str = "paper"          # paper | reference (see scoring.py)
    checkpoints: list[int] | None = None    # default: every checkpoint of the run
    seed: int = 0
    name: str | None = None
    output: str | None = None               # also export the selection (JSONL, or Parquet by suffix)
    max_seq_length: int | None = None       # RDS/RDS+: default the feature set's / run's
    device: str = "cpu"                     # RDS/RDS+ forward passes
    batch_rows: int = 4096                  # feature rows per BLAS product (bounds memory)
    val_max_seq_length: int | None = None   # validation token window (default: the feature set's)
    val_truncation: str = "right"           # right (paper) | left: keep the completion, drop the earliest prompt
    replay: str | None = None               # re-run this recorded selection instead
    progress: bool = True


@dataclass
class Member:
    rank: int
    candidate_id: str
    score: float
    best_subtask: str | None


@dataclass
class SelectionResult:
    selection_id: str
    name: str | None
    task: str
    task_hash: str
    method: str
    pool: str
    k: int
    percentage: float | None
    n_candidates: int          # passed the filter
    n_scored: int
    n_unscorable: int
    members: list[Member]
    provenance: dict
    seconds: float
    replay_of: str | None = None
    identical: bool | None = None    # replays: same members, ranks and scores as the original
    output: str | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self, top: int = 10) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "members"}
        d["members_head"] = [asdict(m) for m in self.members[:top]]
        return d


@dataclass
class _Plan:
    """Everything that determines a selection's result (what is recorded, what a replay restores)."""
    task_name: str
    task_hash: str
    subtasks: dict[str, list[tuple[str, list[dict]]]]   # sorted subtask names
    method: str
    aggregation: str
    pool: str
    where: str | None
    seed: int
    percentage: float | None
    count: int | None
    run_id: str | None = None
    fs: object | None = None                            # FeatureSetInfo
    epochs: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    recorded: dict | None = None                        # replay: the original selection row
    candidate_exclusions: set[str] | None = None        # the feature set's excluded candidates (read ahead)


@dataclass
class _Scores:
    per_subtask: np.ndarray     # [N, m]
    valid: np.ndarray           # [N]
    subtasks: tuple[str, ...]
    unscorable: dict[str, int]  # reason -> count


# -- entry points ---------------------------------------------------------------------------------------------
def select(ws, config: SelectConfig) -> SelectionResult:
    """Run a selection (or, with `config.replay`, replay a recorded one) and record it."""
    if config.replay:
        return replay(ws, config.replay, name=config.name, output=config.output, progress=config.progress,
                      batch_rows=config.batch_rows, device=config.device)
    started = time.monotonic()
    if config.task:
        from .. import tasks

        tasks.ensure_builtin_tasks(ws, [config.task])   # may write: before the read-only block below
    with _metadata_reads(ws):
        plan = _plan(ws, config)
        ids = _prefetch(ws, plan)
    return _execute(ws, plan, ids, started, config, notes=[])


def replay(ws, ref: str, name: str | None = None, output: str | None = None, progress: bool = True,
           batch_rows: int = 4096, device: str = "cpu") -> SelectionResult:
    """Re-run recorded selection `ref` against the LanceDB versions it read; records the replay (replay_of)
    and reports whether members, ranks and scores are identical to the original."""
    started = time.monotonic()
    with _metadata_reads(ws):
        row = meta.get_selection(ws, ref)
        plan = _plan_from_record(ws, row)
        ids = _prefetch(ws, plan)
    cfg = SelectConfig(task=row["task"], method=row["method"], name=name, output=output, progress=progress,
                       batch_rows=batch_rows, device=device, seed=row["seed"])
    result = _execute(ws, plan, ids, started, cfg, notes=[f"replay of {row['selection_id']}"])
    original = meta.selection_members(ws, row["selection_id"])
    mine = [(m.rank, m.candidate_id, m.score, m.best_subtask) for m in result.members]
    theirs = list(zip(*(original.column(c).to_pylist() for c in ("rank", "candidate_id", "score", "best_subtask"))))
    result.identical = mine == theirs
    return result


@contextmanager
def _metadata_reads(ws):
    """Hold one read-only DuckDB connection around a run of metadata reads. Every read opens its own short-lived
    connection (storage/duck.py); while one is open in this process DuckDB reuses the open database, so each
    costs ~3 ms instead of 40-150 ms (measured on the loaded 2-core box). Nothing inside may write (DuckDB
    refuses a read-write connection next to a read-only one), and it is held only while planning."""
    with ws.duck.connect(read_only=True):
        yield


def _prefetch(ws, plan: _Plan) -> list[str]:
    """The filtered candidate ids (sorted) and the feature set's exclusions, read with the plan's metadata."""
    ids = select_candidate_ids(ws, plan.pool, plan.where, plan.versions[CANDIDATES])
    if plan.fs is not None:
        plan.candidate_exclusions = meta.feature_exclusions(ws, plan.fs.feature_set_id)
    return ids


# -- planning ---------------------------------------------------------------------------------------------------
def _plan(ws, cfg: SelectConfig) -> _Plan:
    from .. import tasks
    from ..storage import meta_runs

    method = cfg.method.lower()
    if method not in METHODS:
        raise LessdbError(f"--method {cfg.method!r}: choose one of {', '.join(METHODS)}")
    if cfg.val_aggregation not in ("paper", "reference"):
        raise LessdbError(f"--val-aggregation {cfg.val_aggregation!r}: choose paper or reference")
    if not cfg.task:
        raise LessdbError("--task is required (see `lessdb tasks`)")
    if cfg.count is not None and cfg.percentage is not None:
        raise LessdbError("give --percentage or --count, not both")
    if cfg.count is not None and cfg.count < 1:
        raise LessdbError(f"--count {cfg.count}: must be at least 1")
    percentage = None if cfg.count is not None else (DEFAULT_PERCENTAGE if cfg.percentage is None
                                                      else cfg.percentage)
    if percentage is not None and not (0 < percentage <= 1):
        raise LessdbError(f"--percentage {percentage}: must be in (0, 1] (0.05 means 5%)")
    notes: list[str] = []
    task = tasks.load_task(ws, cfg.task)
    subtasks = {s: [(ex.example_id, ex.messages) for ex in task.subtasks[s]] for s in sorted(task.subtasks)}

    needs_run = method in GRADIENT_METHODS or method in HIDDEN_METHODS
    fs, run_id = None, cfg.run
    if cfg.feature_set:
        fs = _feature_set(ws, cfg.feature_set)
        if run_id and fs.run_id != run_id:
            raise LessdbError(f"feature set {fs.feature_set_id} belongs to run {fs.run_id}, not {run_id}")
        run_id = fs.run_id
    if run_id is None:
        runs = [r for r in meta_runs.list_runs(ws, kind="warmup", pool=cfg.pool) if r["status"] == "complete"]
        if runs:
            run_id = runs[-1]["run_id"]
            if needs_run and len(runs) > 1:
                notes.append(f"using the newest complete warmup run {run_id} (of {len(runs)}); pass --run to choose")
        elif needs_run:
            where = f" on pool {cfg.pool!r}" if cfg.pool else ""
            raise LessdbError(f"--method {method} needs a warmup run{where}; run `lessdb warmup` first or pass --run")
    run = meta_runs.get_run(ws, run_id) if run_id else None
    pool = cfg.pool or (run or {}).get("pool")
    if pool is None:
        all_pools = meta.pools(ws)
        if len(all_pools) != 1:
            raise LessdbError("--pool is required" + (f" (pools: {', '.join(all_pools)})" if all_pools
                                                       else ": ingest a pool first with `lessdb ingest`"))
        pool = all_pools[0]
    if run is not None and run.get("pool") not in (None, pool) and needs_run:
        notes.append(f"run {run_id} was warmed up on pool {run['pool']}; selecting from pool {pool}")

    grad_kind = GRADIENT_METHODS.get(method)
    if fs is None and run_id is not None and (grad_kind is not None or method in TEXT_METHODS):
        wanted = grad_kind or "adam"
        sets = meta.feature_sets_of_run(ws, run_id, wanted)
        if sets:
            fs = _feature_set(ws, sets[0]["feature_set_id"])
            if len(sets) > 1 and grad_kind:
                notes.append(f"using the newest {wanted} feature set {fs.feature_set_id} (of {len(sets)}); "
                             "pass --feature-set to choose")
        elif grad_kind:
            raise LessdbError(f"--method {method} needs a feature set of kind {wanted!r} for run {run_id}; run "
                              f"`lessdb featurize --run {run_id}" + ("" if wanted == "adam" else
                                                                   f" --grad-kind {wanted}") + "` first")
    if grad_kind is not None and fs.grad_kind != grad_kind:
        raise LessdbError(f"--method {method} needs {grad_kind} features; feature set {fs.feature_set_id} holds "
                          f"{fs.grad_kind}")

    plan = _Plan(task.name, task.task_hash, subtasks, method,
                 "dot" if method == "unnormalized" else cfg.val_aggregation, pool, cfg.where, cfg.seed,
                 percentage, cfg.count, run_id=run_id, fs=fs)
    plan.versions[CANDIDATES] = candidates_version(ws)
    plan.params = {"pool": pool, "count": cfg.count, "_notes": notes}
    if method in GRADIENT_METHODS or method in HIDDEN_METHODS:
        plan.params["aggregation"] = plan.aggregation
    if method in GRADIENT_METHODS:
        _plan_checkpoints(ws, plan, cfg.checkpoints)
        plan.params["validation_window"] = {"max_seq_length": int(cfg.val_max_seq_length or fs.max_seq_length),
                                            "truncation": cfg.val_truncation}
    if method in HIDDEN_METHODS:
        msl = cfg.max_seq_length or (fs.max_seq_length if fs else None) or _run_max_seq_length(run)
        plan.params["rds"] = {"model": run["model_name"], "model_sha256": run["model_sha256"],
                              "pooling": HIDDEN_METHODS[method], "max_seq_length": int(msl), "device": cfg.device}
        if cfg.val_max_seq_length or cfg.val_truncation != "right":
            plan.params["validation_window"] = {"max_seq_length": int(cfg.val_max_seq_length or msl),
                                                "truncation": cfg.val_truncation}
    return plan


def _run_max_seq_length(run: dict) -> int:
    cfg = run.get("config") or {}
    for path in (("warmup", "training", "max_seq_length"), ("training", "max_seq_length"), ("max_seq_length",)):
        node = cfg
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, int):
            return node
    return 2048


def _plan_checkpoints(ws, plan: _Plan, wanted: list[int] | None) -> None:
    from ..storage import meta_runs

    ckpts = {c.epoch: c for c in meta_runs.list_checkpoints(ws, plan.run_id)}
    if not ckpts:
        raise LessdbError(f"run {plan.run_id} has no checkpoints")
    epochs = sorted(wanted) if wanted else sorted(ckpts)
    missing = [e for e in epochs if e not in ckpts]
    if missing:
        raise LessdbError(f"run {plan.run_id} has no checkpoint {missing} (it has {sorted(ckpts)})")
    plan.epochs = epochs
    plan.weights = [float(ckpts[e].mean_lr) for e in epochs]


def _plan_from_record(ws, row: dict) -> _Plan:
    from .. import tasks

    task = tasks.load_task_version(ws, row["task_hash"], row["task"])
    params = dict(row["params"])
    subtasks = {s: [(ex.example_id, ex.messages) for ex in task.subtasks[s]] for s in sorted(task.subtasks)}
    fsid = row.get("feature_set_id") or params.get("exclusions_from")
    fs = _feature_set(ws, fsid) if fsid else None
    count = params.get("count")
    plan = _Plan(row["task"], row["task_hash"], subtasks, row["method"], params.get("aggregation", "paper"),
                 params["pool"], row.get("sql_filter"), row["seed"], row.get("percentage"),
                 count if count is not None else (None if row.get("percentage") is not None else row["k"]),
                 run_id=row.get("run_id"), fs=fs, epochs=list(row.get("checkpoints") or []),
                 weights=list(row.get("weights") or []), versions=dict(row["table_versions"]),
                 params=params, recorded=row)
    return plan


def _feature_set(ws, fsid: str):
    from ..storage import features

    try:
        return features.get_feature_set(ws, fsid)
    except LessdbError:
        raise
    except Exception as exc:  # noqa: BLE001 - a missing id is the user's to fix
        raise LessdbError(f"no feature set {fsid!r} ({exc})") from exc


# -- execution ---------------------------------------------------------------------------------------------------
def _execute(ws, plan: _Plan, ids: list[str], started: float, cfg: SelectConfig,
             notes: list[str]) -> SelectionResult:
    cand_version = plan.versions[CANDIDATES]
    if not ids:
        total = len(select_candidate_ids(ws, plan.pool, None, cand_version))
        if plan.where:
            raise LessdbError(f"--where {plan.where!r} matched none of the {total:,} candidates in pool "
                              f"{plan.pool!r}; nothing to select")
        raise LessdbError(f"pool {plan.pool!r} has no candidates (ingest some with `lessdb ingest`)")
    replaying = plan.recorded is not None
    if plan.method in GRADIENT_METHODS:
        scores = _gradient_scores(ws, plan, ids, cfg, replaying)
    elif plan.method in HIDDEN_METHODS:
        scores = _hidden_scores(ws, plan, ids, cfg, replaying)
    else:
        scores = _text_scores(ws, plan, ids, cfg)

    best = scores.per_subtask.max(axis=1) if scores.per_subtask.shape[1] else np.zeros(len(ids))
    best_j = scores.per_subtask.argmax(axis=1)
    valid = scores.valid & np.isfinite(best)
    n_scored = int(valid.sum())
    n_unscorable = len(ids) - n_scored
    if n_scored == 0:
        reasons = ", ".join(f"{n} {r}" for r, n in scores.unscorable.items() if n) or "no scores"
        raise LessdbError(f"none of the {len(ids):,} candidates could be scored ({reasons})")
    if plan.count is not None:
        k = plan.count
        if k > n_scored:
            raise LessdbError(f"--count {k} exceeds the {n_scored:,} candidates that have a score")
    else:
        k = k_from_percentage(plan.percentage, n_scored)
        if k < 1:
            raise LessdbError(f"--percentage {plan.percentage} of {n_scored:,} scored candidates is "
                              f"{plan.percentage * n_scored:.2f} < 1; use --count or a larger --percentage")
    chosen = top_k(best, ids, k, valid)
    with_subtask = len(scores.subtasks) > 1 or scores.subtasks[0] != "*"
    members = [Member(rank + 1, ids[i], float(best[i]), scores.subtasks[best_j[i]] if with_subtask else None)
               for rank, i in enumerate(chosen)]

    selection_id = "sel-" + uuid.uuid4().hex[:10]
    params = {k_: v for k_, v in plan.params.items() if not k_.startswith("_")}
    params.update({"pool": plan.pool, "count": plan.count, "subtasks": list(scores.subtasks),
                   "n_candidates": len(ids), "unscorable": scores.unscorable,
                   "score_histogram": _histogram(best[valid], float(best[chosen[-1]]))})
    fs = plan.fs if plan.method in GRADIENT_METHODS else None
    sketch = None if fs is None else dict(fs.sketch, grad_kind=fs.grad_kind, bias_correction=fs.bias_correction,
                                          max_seq_length=fs.max_seq_length, model_sha256=fs.model_sha256)
    row = {"selection_id": selection_id, "name": cfg.name, "task": plan.task_name, "task_hash": plan.task_hash,
           "method": plan.method, "params": params, "run_id": plan.run_id,
           "feature_set_id": None if fs is None else fs.feature_set_id,
           "checkpoints": plan.epochs or None, "weights": plan.weights or None, "sketch": sketch,
           "table_versions": plan.versions, "sql_filter": plan.where, "k": k,
           "percentage": plan.percentage, "seed": plan.seed, "n_scored": n_scored, "n_unscorable": n_unscorable,
           "replay_of": None if plan.recorded is None else plan.recorded["selection_id"],
           "lessdb_version": __version__}
    members_table = pa.table({
        "rank": pa.array([m.rank for m in members], pa.int64()),
        "candidate_id": pa.array([m.candidate_id for m in members], pa.string()),
        "pool": pa.array([plan.pool] * len(members), pa.string()),
        "score": pa.array([m.score for m in members], pa.float64()),
        "best_subtask": pa.array([m.best_subtask for m in members], pa.string())})
    meta.insert_selection(ws, row, members_table)
    meta.tag_versions(ws, plan.versions, selection_id)
    result = SelectionResult(selection_id, cfg.name, plan.task_name, plan.task_hash, plan.method, plan.pool, k,
                             plan.percentage, len(ids), n_scored, n_unscorable, members,
                             {k_: v for k_, v in row.items() if k_ not in ("selection_id", "name")},
                             time.monotonic() - started, replay_of=row["replay_of"],
                             notes=list(notes) + list(plan.params.get("_notes", [])))
    if cfg.output:
        from .export import export_selection

        result.output = export_selection(ws, selection_id, cfg.output)["path"]
    result.seconds = time.monotonic() - started
    return result


def _histogram(scores: np.ndarray, threshold: float, bins: int = 20) -> dict:
    counts, edges = np.histogram(scores, bins=bins)
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts], "threshold": threshold,
            "min": float(scores.min()), "max": float(scores.max()), "mean": float(scores.mean())}


# -- gradient methods (less, sgd, sign, unnormalized) -------------------------------------------------------------
class IdIndex:
    """Row number of each id in a fixed id list, for whole Arrow columns at once (-1: not in the list).

    A sorted numpy array + searchsorted: ~2 ms per 4,096 ids against 270K (pyarrow's index_in rebuilds its
    hash table on every call: 250 ms per batch)."""

    def __init__(self, ids: list[str]):
        keys = np.array(ids, dtype=str) if ids else np.array([], dtype="<U1")
        self._order = np.argsort(keys, kind="stable")
        self._sorted = keys[self._order]

    def __call__(self, column) -> np.ndarray:
        values = np.array(column.to_pylist(), dtype=str) if len(column) else np.array([], dtype="<U1")
        if len(self._sorted) == 0 or len(values) == 0:
            return np.full(len(values), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self._sorted, values), len(self._sorted) - 1)
        hit = self._sorted[pos] == values
        return np.where(hit, self._order[pos], -1).astype(np.int64)


def _gradient_scores(ws, plan: _Plan, ids: list[str], cfg: SelectConfig, replaying: bool) -> _Scores:
    fs = plan.fs
    table = fs.lance_table
    dot = plan.aggregation == "dot"
    columns = meta.feature_table_columns(ws, table)
    raw_vectors = (fs.params or {}).get("normalized") is False
    if dot and not raw_vectors and "norm" not in columns:
        raise LessdbError(f"--method unnormalized needs raw gradient norms, but feature set {fs.feature_set_id} "
                          "stores only unit vectors (its table has no `norm` column: it was made by an older "
                          f"lessdb); featurize into a new feature set (`lessdb featurize --run {fs.run_id}` with the "
                          "same options now writes one with norms) and select with --feature-set")
    row_scale = "inverse_norm" if not dot else ("none" if raw_vectors else "given")
    plan.params["row_scale"] = row_scale
    plan.params["grad_kind"] = fs.grad_kind

    # 1. validation features (plain gradients, same sketch), computed and cached on first use
    window = plan.params.get("validation_window") or {"max_seq_length": fs.max_seq_length, "truncation": "right"}
    wanted_val = plan.params.get("validation_examples") if replaying else None
    if not replaying:
        examples = _unique_examples(plan.subtasks)
        with _metadata_reads(ws):   # usually all cached: find out with cheap reads before computing anything
            missing = [e for e in plan.epochs
                       if validation_missing(ws, fs.feature_set_id, e, examples, **window)]
        for epoch in missing:
            compute_validation_features(ws, fs.feature_set_id, epoch, examples, **window)
        plan.versions[table] = ws.lance.version(table)
    version = plan.versions[table]

    # 2. read them back from the pinned version (so a replay reads exactly these bytes)
    val_cols = ("example_id", "epoch", "vector") + (("norm",) if row_scale == "given" else ())
    val_vecs: dict[int, dict[str, np.ndarray]] = {e: {} for e in plan.epochs}
    val_norms: dict[int, dict[str, float]] = {e: {} for e in plan.epochs}
    # one scan for every checkpoint (each scan evaluates the filter over the whole table)
    for batch in meta.scan_features(ws, table, version, "validation", plan.epochs, val_cols, cfg.batch_rows):
        vecs = vector_view(batch.column("vector"), fs.dim)
        scale = batch.column("norm").to_numpy(zero_copy_only=False) if row_scale == "given" else None
        for r, (eid, epoch) in enumerate(zip(batch.column("example_id").to_pylist(),
                                             batch.column("epoch").to_pylist())):
            got = val_vecs[epoch]
            if eid not in got:   # the first stored row of a (checkpoint, example), as in table order
                got[eid] = vecs[r].astype(np.float32)
                if scale is not None:
                    val_norms[epoch][eid] = float(scale[r])
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
        raise LessdbError(f"task {plan.task_name}: none of its {sum(len(v) for v in plan.subtasks.values())} "
                          f"validation examples has a completion token left after truncation to "
                          f"{window['max_seq_length']} tokens (or their features are missing); nothing to score against; "
                          "try --val-max-seq-length or --val-truncation left")
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

    # 3. stream candidate features: one pinned scan per checkpoint, one GEMM per batch; the scan (and the id
    #    lookup, and the float16 -> float32 conversion) runs ahead in a thread while BLAS multiplies
    present = set(meta.feature_epochs(ws, table, version))
    absent = [e for e in plan.epochs if e not in present]
    if absent:
        raise LessdbError(f"feature set {fs.feature_set_id} has no candidate features for checkpoint(s) {absent}; "
                          f"run `lessdb featurize --run {plan.run_id}` or pass --checkpoints")
    id_index = IdIndex(ids)
    acc = ScoreAccumulator(len(ids), queries, row_scale=row_scale, batch_rows=cfg.batch_rows)
    cols = ("example_id", "vector") + (("norm",) if row_scale == "given" else ())
    progress = Progress(f"scoring {plan.method}", total=len(ids) * len(plan.epochs), unit="rows",
                        enabled=None if cfg.progress else False)

    def batches():
        for epoch in plan.epochs:
            for batch in meta.scan_features(ws, table, version, "candidate", epoch, cols, cfg.batch_rows):
                rows = id_index(batch.column("example_id"))
                keep = rows >= 0
                vecs = vector_view(batch.column("vector"), fs.dim)
                scale = batch.column("norm").to_numpy(zero_copy_only=False) if row_scale == "given" else None
                if not keep.all():
                    rows, vecs = rows[keep], vecs[keep]
                    scale = None if scale is None else scale[keep]
                if scale is not None:
                    _require_norms(scale, fs)
                yield epoch, rows, vecs, scale

    acc.add_stream(batches(), on_batch=progress.update)
    progress.close()
    res = acc.result()
    missing = int((~acc.seen.all(axis=1)).sum())
    excluded = plan.candidate_exclusions
    no_completion = sum(1 for i in np.flatnonzero(~acc.seen.all(axis=1)) if ids[i] in excluded)
    unscorable = {"no_completion_tokens": no_completion, "missing_features": missing - no_completion,
                  "zero_gradient": int((acc.zero_norm & acc.seen.all(axis=1)).sum()),
                  "duplicate_rows_ignored": acc.n_duplicates}
    return _Scores(res.per_subtask, res.valid, res.subtasks, unscorable)


def _require_norms(norms: np.ndarray, fs) -> None:
    """A row written without a raw norm (null, read as NaN; featurize never stores a non-finite one) cannot be
    scored unnormalised. Checked on the rows used only: rows outside the filter do not matter."""
    missing = int(np.isnan(norms).sum())
    if missing:
        raise LessdbError(f"--method unnormalized needs raw gradient norms, but {missing} row(s) of feature set "
                          f"{fs.feature_set_id} were stored without one (not by `lessdb featurize`); featurize "
                          "into a new feature set and select with --feature-set")


def compute_validation_features(ws, feature_set_id: str, epoch: int, examples: list,
                                max_seq_length: int | None = None, truncation: str = "right") -> None:
    """Make sure the task's validation features (plain gradients, the feature set's sketch) are stored; they
    are cached in the feature table (role "validation"), so a second selection for the task computes nothing."""
    from .. import featurize

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


# -- text baselines (random, bm25, dsir) ---------------------------------------------------------------------------
def _scorable_mask(ws, plan: _Plan, ids: list[str]) -> tuple[np.ndarray, dict[str, int]]:
    """Candidates a text baseline may score: some assistant text, and not excluded by the run's feature set
    (no completion token left after truncation with the selection model's tokenizer)."""
    bad = meta.candidate_ids_without_completion(ws, plan.pool, plan.where, plan.versions[CANDIDATES])
    excluded = plan.candidate_exclusions or set()
    mask = np.array([cid not in bad and cid not in excluded for cid in ids], dtype=bool)
    n_bad = sum(1 for cid in ids if cid in bad)
    return mask, {"no_completion_text": n_bad, "no_completion_tokens": int((~mask).sum()) - n_bad}


def _iter_texts(ws, plan: _Plan, ids: list[str], mask: np.ndarray, batch_rows: int = 1024):
    """(row index, text) of every scorable filtered candidate, one pinned scan of the pool."""
    id_index = IdIndex(ids)
    for batch in meta.scan_candidates(ws, plan.versions[CANDIDATES], plan.pool, ["messages"], batch_rows):
        rows = id_index(batch.column("id"))
        msgs = batch.column("messages").to_pylist()
        for r, m in zip(rows, msgs):
            if r >= 0 and mask[r]:
                yield int(r), baselines.conversation_text(m)


def _text_scores(ws, plan: _Plan, ids: list[str], cfg: SelectConfig) -> _Scores:
    mask, unscorable = _scorable_mask(ws, plan, ids)
    if plan.fs is not None:
        plan.params["exclusions_from"] = plan.fs.feature_set_id
    n = len(ids)
    if plan.method == "random":
        scores = baselines.random_scores(ids, plan.seed)[:, None]
        return _Scores(scores, mask, ("*",), unscorable)
    subtask_names = tuple(plan.subtasks)
    queries, query_subtask = [], []
    for j, s in enumerate(subtask_names):
        for _, msgs in plan.subtasks[s]:
            queries.append(baselines.conversation_text(msgs))
            query_subtask.append(j)
    seen = np.zeros(n, dtype=bool)
    progress = Progress(f"scoring {plan.method}", total=int(mask.sum()), unit="candidates",
                        enabled=None if cfg.progress else False)
    if plan.method == "bm25":
        params = {"k1": 1.5, "b": 0.75, "epsilon": 0.25, "tokenizer": "lowercase \\w+ words"}
        plan.params["bm25"] = params
        bm25 = baselines.StreamingBM25([baselines.words(q) for q in queries], params["k1"], params["b"],
                                       params["epsilon"])
        order = []
        for r, text in _iter_texts(ws, plan, ids, mask):
            if seen[r]:
                continue
            seen[r] = True
            order.append(r)
            bm25.add(baselines.words(text))
            progress.update()
        per_query = np.zeros((len(queries), n))
        per_query[:, order] = bm25.scores()
    else:  # dsir
        params = {"buckets": 10_000, "ngrams": "unigram+bigram", "hash": "crc32", "floor": 1e-8}
        plan.params["dsir"] = params
        ngrams = baselines.HashedNgrams(params["buckets"])
        pool_counts = np.zeros(params["buckets"])
        for r, text in _iter_texts(ws, plan, ids, mask):
            if not seen[r]:
                seen[r] = True
                pool_counts += ngrams.counts(text)
        log_ratio = np.stack([baselines.dsir_log_ratio(
            sum(ngrams.counts(baselines.conversation_text(m)) for _, m in plan.subtasks[s]), pool_counts,
            params["floor"]) for s in subtask_names], axis=1)                     # [buckets, m]
        per_subtask = np.zeros((n, len(subtask_names)))
        done = np.zeros(n, dtype=bool)
        for r, text in _iter_texts(ws, plan, ids, mask):
            if not done[r]:
                done[r] = True
                per_subtask[r] = ngrams.counts(text) @ log_ratio
                progress.update()
        progress.close()
        return _Scores(per_subtask, mask & seen, subtask_names, unscorable)
    progress.close()
    per_subtask = baselines.mean_within_subtasks(per_query, query_subtask, len(subtask_names))
    return _Scores(per_subtask, mask & seen, subtask_names, unscorable)


# -- hidden-state baselines (rds, rds+) ------------------------------------------------------------------------------
def _hidden_scores(ws, plan: _Plan, ids: list[str], cfg: SelectConfig, replaying: bool) -> _Scores:
    from ..models import load_base_model
    from ..tokenization import encode_conversation, encode_window, pad_token_id

    rds = plan.params["rds"]
    loaded = load_base_model(ws, rds["model"], device=cfg.device)
    if loaded.sha256 != rds["model_sha256"]:
        raise LessdbError(f"model {rds['model']} now has weights {loaded.sha256[:12]}…, not the run's "
                          f"{rds['model_sha256'][:12]}…")
    model, tok = loaded.model.eval(), loaded.tokenizer
    msl, pooling, pad = rds["max_seq_length"], rds["pooling"], pad_token_id(tok)

    # validation embeddings per subtask (examples with no completion token left are skipped, as for gradients);
    # older recorded selections have no validation_window: the run's window, truncated on the right
    window = plan.params.get("validation_window") or {"max_seq_length": msl, "truncation": "right"}
    subtask_vecs, dropped = {}, []
    for s, exs in plan.subtasks.items():
        enc = [encode_window(tok, m, window["max_seq_length"], window["truncation"]) for _, m in exs]
        enc = [e for e in enc if e.completion_tokens > 0]
        if enc:
            subtask_vecs[s] = baselines.hidden_state_embeddings(model, enc, pad, pooling)
        else:
            dropped.append(s)
    if not subtask_vecs:
        raise LessdbError(f"task {plan.task_name}: none of its validation examples has a completion token left "
                          f"after {window['truncation']} truncation to {window['max_seq_length']} tokens; nothing "
                          "to score against (try --val-max-seq-length N --val-truncation left)")
    if dropped:
        plan.params["dropped_subtasks"] = dropped
    queries = build_queries({1: subtask_vecs}, {1: 1.0}, plan.aggregation)
    mask, unscorable = _scorable_mask(ws, plan, ids)
    acc = ScoreAccumulator(len(ids), queries, batch_rows=cfg.batch_rows)
    progress = Progress(f"embedding {plan.method}", total=int(mask.sum()), unit="candidates",
                        enabled=None if cfg.progress else False)
    n_trunc = 0
    for chunk in baselines.iter_chunks(_iter_messages(ws, plan, ids, mask), 64):
        rows, enc = [], []
        for r, msgs in chunk:
            e = encode_conversation(tok, msgs, msl)
            if e.completion_tokens > 0:
                rows.append(r)
                enc.append(e)
            else:
                n_trunc += 1
        if enc:
            acc.add(1, np.array(rows), baselines.hidden_state_embeddings(model, enc, pad, pooling))
        progress.update(len(chunk))
    progress.close()
    unscorable["no_completion_tokens"] = unscorable.get("no_completion_tokens", 0) + n_trunc
    res = acc.result()
    return _Scores(res.per_subtask, res.valid & mask, res.subtasks, unscorable)


def _iter_messages(ws, plan: _Plan, ids: list[str], mask: np.ndarray):
    id_index = IdIndex(ids)
    done = np.zeros(len(ids), dtype=bool)
    for batch in meta.scan_candidates(ws, plan.versions[CANDIDATES], plan.pool, ["messages"], 256):
        rows = id_index(batch.column("id"))
        for r, m in zip(rows, batch.column("messages").to_pylist()):
            if r >= 0 and mask[r] and not done[r]:
                done[r] = True
                yield int(r), m

