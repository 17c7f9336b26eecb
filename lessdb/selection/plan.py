"""Planning a selection: everything that determines its result, before anything is scored (SPEC §1 Step 3, §3).

`make_plan(ws, SelectConfig)` checks the request and resolves the task (its validation examples by subtask), the
pool, the SQL filter, the warmup run and feature set the method needs, the method's typed parameters and, through
the method's `prepare` hook, its family's settings (checkpoints and their weights, token windows, model). A
replay rebuilds the same `Plan` from the recorded selection row (`plan_from_record`), pinned to the table
versions it read.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from ..errors import LessdbError
from ..settings import FieldText, SettingError, ref
from .choose import picking_options
from .config import DEFAULT_PERCENTAGE, PERCENTAGE_OF, RunOptions, SelectConfig
from .methods import Method, get_method
from .targets import check_balance, parse_targets, plan_targets, recorded_targets

# storage (lancedb, duckdb) is imported inside the functions: `lessdb --help` imports the method modules, which
# import this one
CANDIDATES = "candidates"   # storage.lance_tables.CANDIDATES (a test keeps the two equal)


@dataclass
class Plan:
    """Everything that determines a selection's result (what is recorded, what a replay restores)."""
    task_name: str
    task_hash: str
    subtasks: dict[str, list[tuple[str, list[dict]]]]   # sorted subtask names -> (example id, messages)
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
    params: dict = field(default_factory=dict)          # recorded with the selection ("_" keys are not)
    recorded: dict | None = None                        # replay: the original selection row
    candidate_exclusions: set[str] | None = None        # the feature set's excluded candidates (read ahead)
    method_params: object | None = None                 # the method's typed parameters (a frozen dataclass)
    options: RunOptions = field(default_factory=RunOptions)

    @property
    def replaying(self) -> bool:
        return self.recorded is not None

    @property
    def spec(self) -> Method:
        return get_method(self.method)


@contextmanager
def metadata_reads(ws):
    """Hold one read-only DuckDB connection around a run of metadata reads. Every read opens its own short-lived
    connection (storage/duck.py); while one is open in this process DuckDB reuses the open database, so each
    costs ~3 ms instead of 40-150 ms (measured on the loaded 2-core box). Nothing inside may write (DuckDB
    refuses a read-write connection next to a read-only one), and it is held only while planning."""
    with ws.duck.connect(read_only=True):
        yield


def prefetch(ws, plan: Plan) -> list[str]:
    """The filtered candidate ids (sorted) and the feature set's exclusions, read with the plan's metadata."""
    from ..storage import meta_selections as meta
    from ..storage.candidates import select_candidate_ids

    ids = select_candidate_ids(ws, plan.pool, plan.where, plan.versions[CANDIDATES])
    if plan.fs is not None:
        plan.candidate_exclusions = meta.feature_exclusions(ws, plan.fs.feature_set_id)
    return ids


def _task_subtasks(task) -> dict[str, list[tuple[str, list[dict]]]]:
    return {s: [(ex.example_id, ex.messages) for ex in task.subtasks[s]] for s in sorted(task.subtasks)}


def make_plan(ws, cfg: SelectConfig, options: RunOptions | None = None) -> Plan:
    from ..storage import meta_runs
    from ..storage import meta_selections as meta
    from ..storage.candidates import candidates_version

    method = get_method(cfg.method)
    cfg.validate()
    if not cfg.task:
        raise SettingError(SelectConfig, [("task", "is required (see `lessdb tasks`)")])
    percentage = None if cfg.count is not None else (DEFAULT_PERCENTAGE if cfg.percentage is None
                                                      and cfg.max_tokens is None else cfg.percentage)
    method_params = method.make_params(cfg.method_params)
    if cfg.prefilter and method.family != "gradient":
        raise SettingError(SelectConfig, [("prefilter", "scores stored gradient features: it applies to less, sgd, "
                                                        f"sign and unnormalized, not to {ref('method')} {method.name}")])
    notes: list[str] = []
    check_balance(cfg.balance or "max", parse_targets(cfg.task))
    task_name, task_hash, subtasks, targets = plan_targets(ws, cfg.task)   # one target or several (targets.py)
    picking = picking_options(cfg)

    needs_run = method.needs_run
    fs, run_id = None, cfg.run
    if cfg.feature_set:
        fs = feature_set(ws, cfg.feature_set)
        if run_id and fs.run_id != run_id:
            raise LessdbError(f"feature set {fs.feature_set_id} belongs to run {fs.run_id}, not {run_id}")
        run_id = fs.run_id
    if run_id is None:
        runs = [r for r in meta_runs.list_runs(ws, kind="warmup", pool=cfg.pool) if r["status"] == "complete"]
        if runs:
            run_id = runs[-1]["run_id"]
            if needs_run and len(runs) > 1:
                notes.append(FieldText(SelectConfig, f"using the newest complete warmup run {run_id} (of "
                                                     f"{len(runs)}); pass {ref('run')} to choose"))
        elif needs_run:
            where = f" on pool {cfg.pool!r}" if cfg.pool else ""
            raise SettingError(SelectConfig, [("method", f"{method.name} needs a warmup run{where}; run `lessdb "
                                                         f"warmup` first or pass {ref('run')}")])
    run = meta_runs.get_run(ws, run_id) if run_id else None
    pool = cfg.pool or (run or {}).get("pool")
    if pool is None:
        all_pools = meta.pools(ws)
        if len(all_pools) != 1:
            raise SettingError(SelectConfig, [("pool", "is required" + (
                f" (pools: {', '.join(all_pools)})" if all_pools else ": ingest a pool first with `lessdb ingest`"))])
        pool = all_pools[0]
    if run is not None and run.get("pool") not in (None, pool) and needs_run:
        notes.append(f"run {run_id} was warmed up on pool {run['pool']}; selecting from pool {pool}")

    wanted = method.feature_kind
    if fs is None and run_id is not None and wanted is not None:
        sets = meta.feature_sets_of_run(ws, run_id, wanted)
        if sets:
            fs = feature_set(ws, sets[0]["feature_set_id"])
            if len(sets) > 1 and method.feature_required:
                notes.append(FieldText(SelectConfig, f"using the newest {wanted} feature set "
                                                     f"{fs.feature_set_id} (of {len(sets)}); pass "
                                                     f"{ref('feature_set')} to choose"))
        elif method.feature_required:
            raise SettingError(SelectConfig, [("method", f"{method.name} needs a feature set of kind {wanted!r} "
                                                         f"for run {run_id}; run `lessdb featurize --run {run_id}"
                                                         + ("" if wanted == "adam" else f" --grad {wanted}")
                                                         + "` first")])
    if method.feature_required and fs.grad_kind != wanted:
        raise SettingError(SelectConfig, [("method", f"{method.name} needs {wanted} features; feature set "
                                                     f"{fs.feature_set_id} holds {fs.grad_kind}")])

    plan = Plan(task_name, task_hash, subtasks, method.name, cfg.val_aggregation, pool,
                cfg.where, cfg.seed, percentage, cfg.count, run_id=run_id, fs=fs, method_params=method_params,
                options=options or RunOptions())
    plan.versions[CANDIDATES] = candidates_version(ws)
    plan.params = {"pool": pool, "count": cfg.count, "_notes": notes, "percentage_of": PERCENTAGE_OF}
    if cfg.allow_partial:
        plan.params["allow_partial"] = True
    if targets:
        plan.params["targets"] = targets
    if picking:
        plan.params["picking"] = picking
    if method_params is not None:
        plan.params[method.record_key] = asdict(method_params)
    if method.prepare is not None:
        method.prepare(ws, plan, cfg, run)
    return plan


def plan_from_record(ws, row: dict, options: RunOptions | None = None) -> Plan:
    """The plan of recorded selection `row`, pinned to the table versions it read."""
    from ..tasks.catalog import load_task_version

    method = get_method(row["method"])
    params = dict(row["params"])
    subtasks = recorded_targets(ws, row)   # several targets; else the one task's version
    if subtasks is None:
        subtasks = _task_subtasks(load_task_version(ws, row["task_hash"], row["task"]))
    fsid = row.get("feature_set_id") or params.get("exclusions_from")
    fs = feature_set(ws, fsid) if fsid else None
    count = params.get("count")
    recorded_params = params.get(method.record_key) or {}
    known = {f for f in (method.params.__dataclass_fields__ if method.params else ())}
    method_params = method.make_params({k: v for k, v in recorded_params.items() if k in known},
                                       where=f"selection {row['selection_id']}")
    return Plan(row["task"], row["task_hash"], subtasks, row["method"],
                params.get("aggregation", "paper"), params["pool"], row.get("sql_filter"), row["seed"],
                row.get("percentage"),
                count if count is not None else (None if row.get("percentage") is not None
                                                 or "budget" in params.get("picking", {}) else row["k"]),
                run_id=row.get("run_id"), fs=fs, epochs=list(row.get("checkpoints") or []),
                weights=list(row.get("weights") or []), versions=dict(row["table_versions"]),
                params=params, recorded=row, method_params=method_params, options=options or RunOptions())


def feature_set(ws, fsid: str):
    from ..storage import features

    try:
        return features.get_feature_set(ws, fsid)
    except LessdbError:
        raise
    except Exception as exc:  # noqa: BLE001 - a missing id is the user's to fix
        raise LessdbError(f"no feature set {fsid!r} ({exc})") from exc


def validation_window(cfg: SelectConfig, default_max_seq_length: int) -> dict:
    """The token window of the validation examples, recorded with the selection so that a replay encodes them
    exactly as this run did. Selections recorded before it was recorded used the default window, cut on the
    right (their readers fall back to that). `cfg` is validated (its truncation side and window)."""
    return {"max_seq_length": int(cfg.val_max_seq_length or default_max_seq_length),
            "truncation": cfg.val_truncation}


def window_hint(window: dict) -> str:
    """What to try when no validation example kept a completion token in `window`."""
    if window["truncation"] == "right":
        return f"drop {ref('val_truncation')} right (the default, left, keeps each completion) or pass a larger " \
               f"{ref('val_max_seq_length')}"
    return f"check that the task's examples have a non-empty completion, or pass a larger {ref('val_max_seq_length')}"
