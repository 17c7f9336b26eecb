"""Hidden-state baselines RDS and RDS+ (SPEC §1 "Baselines and ablations"): cosine of the warmup run's base
model's final hidden state, at the last token (RDS) or mean-pooled over tokens (RDS+), between each candidate and
the task's validation examples; the same query folding, max over subtasks and top k as LESS. The candidates'
embeddings are a stored feature set (featurize/embeddings.py, filled on demand or by `lessdb embed`); selections
recorded before it existed replay by embedding the pool again."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import LessdbError
from ...settings import SettingError
from ...runs.config import run_max_seq_length
from ..config import SelectConfig
from ..plan import validation_window, window_hint
from ..reading import iter_messages, scorable_mask
from . import Scores, register_method


@dataclass(frozen=True)
class RdsParams:
    pooling: str = "last"   # "last": the last real token (RDS) | "mean": the mean over real tokens (RDS+)

    def problems(self) -> list[str]:
        return [] if self.pooling in ("last", "mean") else [f"pooling={self.pooling!r}: choose last or mean"]


@dataclass(frozen=True)
class RdsPlusParams(RdsParams):
    pooling: str = "mean"


def prepare(ws, plan, cfg, run) -> None:
    """The model (pinned by its weights' hash), the candidates' token window and the validation window."""
    fs = plan.fs
    msl = cfg.max_seq_length or (fs.max_seq_length if fs else None) or run_max_seq_length(run)
    plan.params["aggregation"] = plan.aggregation
    plan.params["rds"] = {"model": run["model_name"], "model_sha256": run["model_sha256"],
                          **plan.params.get("rds", {}), "max_seq_length": int(msl), "device": cfg.device}
    plan.params["validation_window"] = validation_window(cfg, msl)


_HIDDEN = dict(params_key="rds", needs_run=True, prepare=prepare)


def hidden_scores(ws, plan, ids: list[str]) -> Scores:
    from ...featurize.embeddings import hidden_state_embeddings
    from ...models.loading import load_base_model
    from ...models.tokenization import encode_conversation, encode_window, pad_token_id
    from ...progress import Progress
    from ...storage.meta_runs import run_model
    from .. import baselines
    from ..scoring import ScoreAccumulator, build_queries

    rds, opts = plan.params["rds"], plan.options
    loaded = load_base_model(ws, run_model(ws, plan.run_id, rds["model"], rds["model_sha256"]), device=opts.device)
    if loaded.sha256 != rds["model_sha256"]:
        raise LessdbError(f"model {rds['model']} now has weights {loaded.sha256[:12]}…, not the run's "
                          f"{rds['model_sha256'][:12]}…")
    model, tok = loaded.model.eval(), loaded.tokenizer
    msl, pooling, pad = rds["max_seq_length"], plan.method_params.pooling, pad_token_id(tok)

    # validation embeddings per subtask (examples with no completion token left are skipped, as for gradients);
    # older recorded selections have no validation_window: the run's window, truncated on the right
    window = plan.params.get("validation_window") or {"max_seq_length": msl, "truncation": "right"}
    subtask_vecs, dropped = {}, []
    for s, exs in plan.subtasks.items():
        enc = [encode_window(tok, m, window["max_seq_length"], window["truncation"]) for _, m in exs]
        enc = [e for e in enc if e.completion_tokens > 0]
        if enc:
            subtask_vecs[s] = hidden_state_embeddings(model, enc, pad, pooling)
        else:
            dropped.append(s)
    if not subtask_vecs:
        raise SettingError(SelectConfig, f"task {plan.task_name}: none of its validation examples has a "
                                         f"completion token left after {window['truncation']} truncation to "
                                         f"{window['max_seq_length']} tokens; nothing to score against; "
                                         f"{window_hint(window)}")
    if dropped:
        plan.params["dropped_subtasks"] = dropped
    queries = build_queries({1: subtask_vecs}, {1: 1.0}, plan.aggregation)
    mask, unscorable = scorable_mask(ws, plan, ids)
    if not plan.replaying or rds.get("feature_set_id"):   # the stored embedding feature set
        per, valid, unscorable = stored_hidden_scores(ws, plan, ids, queries, mask, unscorable, loaded,
                                                      opts.batch_rows, opts.progress)
        return Scores(per, valid, queries.subtasks, unscorable)
    acc = ScoreAccumulator(len(ids), queries, batch_rows=opts.batch_rows)   # selections recorded before it
    progress = Progress(f"embedding {plan.method}", total=int(mask.sum()), unit="candidates",
                        enabled=None if opts.progress else False)
    n_trunc = 0
    for chunk in baselines.iter_chunks(iter_messages(ws, plan, ids, mask), 64):
        rows, enc = [], []
        for r, msgs in chunk:
            e = encode_conversation(tok, msgs, msl)
            if e.completion_tokens > 0:
                rows.append(r)
                enc.append(e)
            else:
                n_trunc += 1
        if enc:
            acc.add(1, np.array(rows), hidden_state_embeddings(model, enc, pad, pooling))
        progress.update(len(chunk))
    progress.close()
    unscorable["no_completion_tokens"] = unscorable.get("no_completion_tokens", 0) + n_trunc
    res = acc.result()
    return Scores(res.per_subtask, res.valid & mask, res.subtasks, unscorable)


QUERY_EPOCH = 1   # the query set's key (select builds RDS queries as one "checkpoint")


def stored_hidden_scores(ws, plan, ids: list[str], queries, mask: np.ndarray, unscorable: dict, loaded,
                         batch_rows: int, progress: bool = True):
    """RDS / RDS+ scores from the stored embedding feature set (featurize/embeddings.py) instead of a forward pass
    over the whole pool per selection: embed what is missing of the filtered candidates, then stream the stored
    vectors at a pinned table version through the same accumulator as gradient features (cosine with each
    subtask's query). A replay reads the recorded version, so it reproduces the scores bit for bit.
    Returns (per-subtask scores [N, m], valid [N], unscorable counts); records the feature set and its version."""
    from ...featurize.embeddings import EPOCH, embed_candidates, hidden_feature_set
    from ...storage import meta_selections as meta
    from ...storage.lance_tables import CANDIDATES
    from ..reading import IdIndex
    from ..scoring import ScoreAccumulator

    rds = plan.params["rds"]
    info = hidden_feature_set(ws, plan.run_id, loaded, rds["pooling"], rds["max_seq_length"])
    table = info.lance_table
    if plan.recorded is None:
        wanted = [cid for cid, ok in zip(ids, mask) if ok]
        embed_candidates(ws, info, loaded, plan.pool, wanted, plan.versions[CANDIDATES], progress=progress)
        plan.versions[table] = ws.lance.version(table)
        rds["feature_set_id"] = info.feature_set_id
    version = plan.versions[table]
    index = IdIndex(ids)
    acc = ScoreAccumulator(len(ids), queries, batch_rows=batch_rows)

    def batches():
        for batch in meta.scan_features(ws, table, version, "candidate", EPOCH, ("example_id", "vector"),
                                        batch_rows):
            rows = index(batch.column("example_id"))
            keep = rows >= 0
            vecs = batch.column("vector").flatten().to_numpy(zero_copy_only=False).reshape(-1, info.dim)
            yield QUERY_EPOCH, rows[keep], vecs[keep], None

    acc.add_stream(batches())
    res = acc.result()
    valid = res.valid & mask
    excluded = set(meta.excluded_examples(ws, info.feature_set_id, EPOCH))
    n_excl = sum(1 for cid, ok, v in zip(ids, mask, res.valid) if ok and not v and cid in excluded)
    unscorable = dict(unscorable)
    unscorable["no_completion_tokens"] = unscorable.get("no_completion_tokens", 0) + n_excl
    missing = int((mask & ~res.valid).sum()) - n_excl
    if missing:
        unscorable["missing_features"] = missing
    return res.per_subtask, valid, unscorable


register_method("rds", params=RdsParams, help="RDS: last-token hidden states of the run's base model",
                **_HIDDEN)(hidden_scores)
register_method("rds+", params=RdsPlusParams, help="RDS+: mean-pooled hidden states", **_HIDDEN)(hidden_scores)
