"""`lessdb eval` and `lessdb compare`: evaluate a trained run (base + LoRA of a checkpoint) or a base model
on a target task, record the results with the exact test items used, and tabulate methods x metrics.

Entry points: `run_eval(ws, EvalConfig) -> EvalSummary`, `evaluate_model(...)` (no workspace writes; what
run_eval records), `compare(ws, task) -> list[dict]`.
"""
from __future__ import annotations

import json
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import __version__
from ..errors import LessdbError
from ..settings import SettingError, ref
from ..progress import Progress
from ..storage import meta_evals
from ..storage.meta_evals import EvalRecord, ItemResult, MetricValue
from . import metrics as M
from .bbh import bbh_prompt
from .config import EvalConfig
from .inference import conversation_losses, generate_greedy, next_token_logits
from .items import TestSet
from .mmlu import MMLU_LETTERS, mmlu_prompt
from .sources import BENCHMARKS, load_test_set
from .tydiqa import tydiqa_user_text

# LESS's generation settings per task (eval/*/run_eval.py)
MAX_NEW_TOKENS = {"bbh": 512, "tydiqa": 50}
STOPS = {"bbh": ["\n\n"], "tydiqa": ["\n"]}
# tasks registered from a LESS data/eval folder (`lessdb task add --less-eval-dir`) score like the built-ins
BENCHMARK_ALIASES = {"bbh-less": "bbh", "mmlu-less": "mmlu"}


def benchmark_of(task: str) -> str | None:
    """The benchmark whose test metric applies to a task name, None for a custom task."""
    task = BENCHMARK_ALIASES.get(task, task)
    return task if task in BENCHMARKS else None


@dataclass
class EvalOutcome:
    metrics: list[MetricValue]
    items: list[ItemResult]
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalSummary:
    eval_id: str
    task: str
    method: str
    model_name: str
    run_id: str | None
    epoch: int | None
    n_items: int | None
    items_sha256: str | None
    results: dict[str, float]
    seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


# -- prompts --------------------------------------------------------------------------------------------------
def chat_wrap(tokenizer, user_text: str, answer_label: str) -> tuple[str, bool]:
    """A one-turn chat prompt ending in the answer label, and whether the tokenizer should add its special
    tokens (not when the chat template already wrote them). Tulu format without a template, as LESS."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": user_text}], tokenize=False,
                                             add_generation_prompt=True)
        add_special = False
    else:
        text = "<|user|>\n" + user_text + "\n<|assistant|>\n"
        add_special = True
    text += answer_label if text[-1] in "\n " else " " + answer_label
    return text, add_special


def build_prompts(ts: TestSet, tokenizer, cfg: EvalConfig) -> tuple[list[str], bool, dict]:
    """Prompts for every item, whether to add special tokens, and the prompt parameters to record."""
    if ts.task == "bbh":
        return [bbh_prompt(ts.shots[it.subtask], it) for it in ts.items], True, {"prompt_format": "plain",
                                                                                "shots": "cot-3"}
    if ts.task == "mmlu":
        prompts, shots_used = [], []
        for it in ts.items:
            k = len(ts.shots.get(it.subtask, []))
            prompt = mmlu_prompt(it.subtask, ts.shots.get(it.subtask, []), it, k)
            while k > 0 and len(tokenizer(prompt, add_special_tokens=True).input_ids) > cfg.max_prompt_tokens:
                k -= 1
                prompt = mmlu_prompt(it.subtask, ts.shots[it.subtask], it, k)
            prompts.append(prompt)
            shots_used.append(k)
        return prompts, True, {"prompt_format": "plain", "n_shot": cfg.n_shot, "max_prompt_tokens":
                               cfg.max_prompt_tokens, "min_shots_used": min(shots_used, default=0)}
    if ts.task == "tydiqa":
        def clip(text: str) -> str:
            ids = tokenizer(text, add_special_tokens=False).input_ids
            return text if len(ids) <= cfg.max_context_tokens else tokenizer.decode(ids[: cfg.max_context_tokens])

        prompts, add_special = [], True
        for it in ts.items:
            user, label = tydiqa_user_text(it.subtask, ts.shots.get(it.subtask, []), it, clip)
            text, add_special = chat_wrap(tokenizer, user, label)
            prompts.append(text)
        fmt = "chat_template" if getattr(tokenizer, "chat_template", None) else "tulu"
        return prompts, add_special, {"prompt_format": fmt, "max_context_tokens": cfg.max_context_tokens,
                                      "n_shot": max((len(v) for v in ts.shots.values()), default=0)}
    raise LessdbError(f"no prompts for task {ts.task!r}")


# -- scoring a test set ---------------------------------------------------------------------------------------
def _per_subtask(items: list[ItemResult], values: list[float]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for it, v in zip(items, values):
        out.setdefault(it.subtask, []).append(v)
    return dict(sorted(out.items()))


def _metric_rows(name: str, per: dict[str, list[float]], overall: float, scale: float = 100.0) -> list[MetricValue]:
    rows = [MetricValue(name, "", overall * scale, sum(len(v) for v in per.values()))]
    rows += [MetricValue(name, sub, M.mean(v) * scale, len(v)) for sub, v in per.items()]
    return rows


def score_test_set(model, tokenizer, ts: TestSet, cfg: EvalConfig) -> EvalOutcome:
    prompts, add_special, params = build_prompts(ts, tokenizer, cfg)
    progress = Progress(f"eval {ts.task}", total=len(prompts), unit="items")
    try:
        if ts.task == "mmlu":
            cand = [tokenizer.encode(" " + letter, add_special_tokens=False)[-1] for letter in MMLU_LETTERS]
            logp = next_token_logits(model, tokenizer, prompts, cand, batch_size=cfg.batch_size,
                                     add_special_tokens=add_special, progress=progress)
            results = []
            for it, row in zip(ts.items, logp.tolist()):
                pred = MMLU_LETTERS[M.predict_choice(row)]
                results.append(ItemResult(it.subtask, it.item_id, list(it.answers), 1.0 if pred == it.answers[0]
                                          else 0.0, prediction=pred, output=json.dumps([round(x, 6) for x in row])))
            per = _per_subtask(results, [r.score for r in results])
            return EvalOutcome(_metric_rows("accuracy", per, M.micro_mean(per)), results, params)
        max_new = cfg.max_new_tokens or MAX_NEW_TOKENS[ts.task]
        outputs = generate_greedy(model, tokenizer, prompts, max_new_tokens=max_new, stops=STOPS[ts.task],
                                  batch_size=cfg.batch_size, add_special_tokens=add_special, progress=progress)
        params.update({"max_new_tokens": max_new, "stops": STOPS[ts.task], "decoding": "greedy"})
        results = []
        if ts.task == "bbh":
            for it, out in zip(ts.items, outputs):
                pred = M.extract_bbh_answer(out)
                results.append(ItemResult(it.subtask, it.item_id, list(it.answers),
                                          M.bbh_exact_match(pred, it.answers[0]), prediction=pred, output=out))
            per = _per_subtask(results, [r.score for r in results])
            return EvalOutcome(_metric_rows("exact_match", per, M.macro_mean(per)), results, params)
        # tydiqa
        ems = []
        for it, out in zip(ts.items, outputs):
            pred = out.strip()
            results.append(ItemResult(it.subtask, it.item_id, list(it.answers),
                                      M.best_over_answers(M.squad_f1, pred, it.answers), prediction=pred, output=out))
            ems.append(M.best_over_answers(M.squad_exact, pred, it.answers))
        per_f1 = _per_subtask(results, [r.score for r in results])
        per_em = _per_subtask(results, ems)
        return EvalOutcome(_metric_rows("f1", per_f1, M.macro_mean(per_f1))
                           + _metric_rows("exact_match", per_em, M.macro_mean(per_em)), results, params)
    finally:
        progress.close()


def target_loss(model, tokenizer, examples: dict[str, list[list[dict]]], cfg: EvalConfig) -> EvalOutcome:
    """Mean completion-token CE of each validation example (l(z)); averaged over examples, and per subtask."""
    flat = [(sub, msgs) for sub, convs in examples.items() for msgs in convs]
    progress = Progress("target loss", total=len(flat), unit="examples")
    try:
        losses = conversation_losses(model, tokenizer, [m for _, m in flat], max_seq_length=cfg.max_seq_length,
                                     batch_size=cfg.batch_size, progress=progress, truncation=cfg.loss_truncation)
    finally:
        progress.close()
    per: dict[str, list[float]] = {}
    for (sub, _), loss in zip(flat, losses):
        if loss is not None:
            per.setdefault(sub, []).append(loss)
    n_excluded = sum(1 for x in losses if x is None)
    if not per:
        raise LessdbError(f"no validation example has a completion token left within max_seq_length="
                          f"{cfg.max_seq_length}")
    return EvalOutcome(_metric_rows("target_loss", dict(sorted(per.items())), M.micro_mean(per), scale=1.0), [],
                       {"loss_max_seq_length": cfg.max_seq_length, "loss_truncation": cfg.loss_truncation,
                        "loss_n_excluded": n_excluded})


def evaluate_model(model, tokenizer, cfg: EvalConfig, test_set: TestSet | None,
                   validation: dict[str, list[list[dict]]] | None) -> EvalOutcome:
    """Target loss on `validation` (subtask -> conversations) and the task metric on `test_set`, each when
    given. Writes nothing."""
    model.eval()
    out = EvalOutcome([], [], {})
    if validation is not None:
        part = target_loss(model, tokenizer, validation, cfg)
        out.metrics += part.metrics
        out.params.update(part.params)
    if test_set is not None:
        part = score_test_set(model, tokenizer, test_set, cfg)
        out.metrics += part.metrics
        out.items += part.items
        out.params.update(part.params)
    return out


# -- the workspace entry point ----------------------------------------------------------------------------------
def method_of(run: dict | None) -> str:
    """The selection method a run trained on: its selection's method, else what the run config records
    ('full', 'random:P' -> 'random'), 'warmup' for warmup runs; 'base' for no run."""
    if run is None:
        return "base"
    if run.get("selection_method"):
        return run["selection_method"]
    cfg = run.get("config") or {}
    for key in ("selection", "selection_spec", "method"):
        spec = cfg.get(key)
        if isinstance(spec, str) and spec:
            return spec.split(":")[0]
    return "warmup" if run.get("kind") == "warmup" else "unknown"


def _validation_examples(ws, task: str) -> tuple[dict[str, list[list[dict]]], str]:
    from ..tasks.catalog import load_task  # imported late so the metric code works without a workspace task

    t = load_task(ws, task)
    return {sub: [ex.messages for ex in exs] for sub, exs in t.subtasks.items()}, t.task_hash


def run_eval(ws, cfg: EvalConfig) -> EvalSummary:
    cfg.validate()
    want_loss = cfg.metrics in ("all", "loss")
    want_task = cfg.metrics in ("all", "task")
    benchmark = benchmark_of(cfg.task)
    if want_task and benchmark is None:
        if cfg.metrics == "task":
            raise SettingError(EvalConfig, f"task {cfg.task!r} has no test metric (only {', '.join(BENCHMARKS)} "
                                           f"do); use {ref('metrics')} loss")
        want_task = False
    # read everything the user pointed at before loading a model: bad paths fail in a second, not a minute
    test_set = load_test_set(benchmark, cfg.data_dir, cfg.split, cfg.limit, cfg.sample_seed, cfg.n_shot) \
        if want_task else None
    validation, task_hash = _validation_examples(ws, cfg.task) if want_loss else (None, None)

    from ..models.loading import load_base_model, resolve_device  # torch: loaded only to evaluate
    from ..runs.checkpoint_models import load_checkpoint_model

    device = resolve_device(cfg.device)
    run = None

    if cfg.run_id is not None:
        run = meta_evals.run_context(ws, cfg.run_id)
        if run is None:
            raise LessdbError(f"no run {cfg.run_id!r} in this workspace (see `lessdb runs`)")
        epochs = meta_evals.checkpoint_epochs(ws, cfg.run_id)
        if not epochs:
            raise LessdbError(f"run {cfg.run_id} has no checkpoint to evaluate")
        epoch = cfg.epoch if cfg.epoch is not None else epochs[-1]
        if epoch not in epochs:
            raise LessdbError(f"run {cfg.run_id} has no checkpoint for epoch {epoch} (has {epochs})")
        model, loaded = load_checkpoint_model(ws, cfg.run_id, epoch, device=device)
    else:
        epoch = None
        loaded = load_base_model(ws, cfg.model, device=device)
        model = loaded.model
    print(f"evaluating {cfg.task} with {loaded.name}" + (f" + LoRA of {cfg.run_id} epoch {epoch}" if run else "")
          + f" on {device}", file=sys.stderr)

    start = time.monotonic()
    outcome = evaluate_model(model, loaded.tokenizer, cfg, test_set, validation)
    seconds = time.monotonic() - start

    params = dict(outcome.params, batch_size=cfg.batch_size)
    record = EvalRecord(
        eval_id="ev-" + uuid.uuid4().hex[:12], method=method_of(run), model_name=loaded.name, task=cfg.task,
        split=cfg.split, params=params, lessdb_version=__version__, run_id=cfg.run_id, epoch=epoch,
        selection_id=run["selection_id"] if run else None, model_sha256=getattr(loaded, "sha256", None),
        is_transfer=bool(run["is_transfer"]) if run else False, seed=run["seed"] if run else None,
        task_hash=task_hash, items_source=test_set.source if test_set else None,
        items_sha256=test_set.items_sha256 if test_set else None, n_items=len(test_set.items) if test_set else None,
        item_limit=cfg.limit if test_set else None, sample_seed=cfg.sample_seed if test_set else None,
        device=device, seconds=seconds)
    meta_evals.record_eval(ws, record, outcome.metrics, outcome.items)
    return EvalSummary(record.eval_id, cfg.task, record.method, record.model_name, cfg.run_id, epoch,
                       record.n_items, record.items_sha256,
                       {m.metric: m.value for m in outcome.metrics if m.subtask == ""}, seconds)


# -- compare ----------------------------------------------------------------------------------------------------
def compare(ws, task: str) -> list[dict]:
    """One row per (method, model, transfer, selection size, checkpoint epoch, test items): every task-level
    metric's mean and sample standard deviation over the evaluated runs (seeds), with the seeds and eval ids.
    Evaluations of different checkpoints or different test items are never pooled."""
    groups: dict[tuple, dict] = {}
    for r in meta_evals.task_level_results(ws, task):
        key = (r["method"], r["model_name"], bool(r["is_transfer"]), r["percentage"], r["k"], r["epoch"],
               r["items_sha256"])
        g = groups.setdefault(key, {"evals": {}, "values": {}})
        g["evals"][r["eval_id"]] = r
        g["values"].setdefault(r["metric"], []).append(r["value"])
    rows = []
    for (method, model, transfer, pct, k, epoch, items_sha), g in sorted(groups.items(), key=lambda kv: tuple(
            "" if x is None else str(x) for x in kv[0])):
        evals = list(g["evals"].values())
        seeds = sorted({e["seed"] for e in evals if e["seed"] is not None})
        row = {"method": method, "model": model, "transfer": transfer, "percentage": pct, "k": k, "epoch": epoch,
               "items": items_sha[:12] if items_sha else None, "n_items": evals[0]["n_items"],
               "n_evals": len(evals), "seeds": seeds, "eval_ids": [e["eval_id"] for e in evals], "metrics": {}}
        for metric, values in sorted(g["values"].items()):
            mean, std = M.mean_std(values)
            row["metrics"][metric] = {"mean": mean, "std": std, "n": len(values), "values": values}
        row["training"] = _training_of(ws, evals)
        rows.append(row)
    flag_mismatches(rows)
    return rows


TRAINING_KEYS = ("lr", "epochs", "batch_size", "max_seq_length")
LORA_KEYS = ("r", "alpha")


def _training_of(ws, evals: list[dict]) -> dict | str | None:
    """The training settings the row's runs share (None: a base model; "mixed" if they differ)."""
    from ..storage import meta_runs

    seen = set()
    for e in evals:
        if not e.get("run_id"):
            continue
        cfg = meta_runs.get_run(ws, e["run_id"])["config"] or {}
        t, lora = cfg.get("training") or {}, cfg.get("lora") or {}
        seen.add(tuple([t.get(k) for k in TRAINING_KEYS] + [lora.get(k) for k in LORA_KEYS]))
    if not seen:
        return None
    if len(seen) > 1:
        return "mixed"
    values = next(iter(seen))
    return dict(zip([*TRAINING_KEYS, *("lora_" + k for k in LORA_KEYS)], values))


def flag_mismatches(rows: list[dict]) -> None:
    """`flags` on every row whose model or training settings differ from the most common ones of the trained
    rows: such rows are not a like-for-like comparison (e.g. a baseline trained on another base model)."""
    trained = [r for r in rows if r["training"] is not None]
    for r in rows:
        r["flags"] = ["its runs' training settings differ"] if r["training"] == "mixed" else []
    if len(trained) < 2:
        return
    models = [r["model"] for r in trained]
    usual_model = max(set(models), key=models.count)
    keys = [json.dumps(r["training"], sort_keys=True) for r in trained]
    usual = max(set(keys), key=keys.count)
    for r, key in zip(trained, keys):
        if r["model"] != usual_model:
            r["flags"].append(f"model {r['model']} (others: {usual_model})")
        if r["training"] != "mixed" and key != usual and usual != json.dumps("mixed"):
            other = json.loads(usual)
            diff = [f"{k} {v} (others: {other.get(k)})" for k, v in r["training"].items() if other.get(k) != v]
            r["flags"].append("training " + ", ".join(diff))


def format_mean_std(stat: dict | None) -> str:
    if not stat:
        return ""
    text = f"{stat['mean']:.4g}" if abs(stat["mean"]) < 10 else f"{stat['mean']:.2f}"
    return text + (f" ± {stat['std']:.2g}" if stat["std"] is not None else "") + f" (n={stat['n']})"


def compare_table(rows: list[dict]) -> tuple[list[dict], list[str]]:
    """Flat rows and columns for a text table: methods x metrics as 'mean ± std (n)'."""
    metric_names = sorted({m for r in rows for m in r["metrics"]})
    columns = ["method", "model", "transfer", "percentage", "epoch", "items", "n_items", "seeds"] + metric_names + [
        "flags"]
    flat = []
    for r in rows:
        d = {c: r.get(c) for c in columns[:7]}
        d["seeds"] = ",".join(map(str, r["seeds"])) if r["seeds"] else ""
        for m in metric_names:
            d[m] = format_mean_std(r["metrics"].get(m))
        d["flags"] = "; ".join(r.get("flags") or []) or ""
        flat.append(d)
    return flat, columns
