"""RDS / RDS+ embeddings as a stored feature set: the selection model's final hidden state at the last token
("last", RDS) or mean-pooled over the tokens ("mean", RDS+), computed once per (model weights, tokenizer,
pooling, token window) and read by every later `--method rds|rds+` selection.

They live where gradient features live: a `feature_sets` row (grad_kind "hidden-last" / "hidden-mean", no
sketch: dim = the hidden size) and a LanceDB table `features_<id>` (role "candidate", epoch 0, the raw float32
embedding and its norm), filled by the same resumable, shardable jobs (`feature_jobs`, `feature_exclusions`):
a rerun, or the next selection over a grown pool, computes only the candidates still missing.

`lessdb embed --run RUN --pooling mean [--shard i/n]` fills it ahead of time (in parallel processes for big
pools); a selection computes whatever of its filtered candidates is still missing.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

import numpy as np

from .. import __version__
from ..errors import LessdbError
from ..settings import SettingError
from ..progress import Progress
from ..storage import features as fstore
from ..storage import meta_features
from .compute import EXCLUDED_NO_COMPLETION, FeatureWriter
from .planning import shard_of

POOLINGS = {"last": "hidden-last", "mean": "hidden-mean"}
FORMAT = 1
EPOCH = 0   # hidden states of the base model: no checkpoint


@dataclass
class EmbedSummary:
    feature_set_id: str
    lance_table: str
    shard: str
    examples: int = 0
    excluded: int = 0
    already_present: int = 0
    seconds: float = 0.0
    lance_version: int | None = None


def hidden_state_embeddings(model, encoded: list, pad_id: int, pooling: str, batch_size: int = 16) -> np.ndarray:
    """[n, hidden] final-layer hidden states: the last real token ("last", RDS) or the mean over real tokens
    ("mean", RDS+). `encoded` are EncodedExamples; batches are right-padded, so padding changes neither."""
    if pooling not in ("last", "mean"):
        raise ValueError(pooling)
    import torch

    from ..models.tokenization import collate

    out = []
    device = next(model.parameters()).device
    with torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            batch = collate(encoded[start:start + batch_size], pad_id)
            mask = batch["attention_mask"].to(device)
            hs = model(input_ids=batch["input_ids"].to(device), attention_mask=mask, output_hidden_states=True,
                       logits_to_keep=1).hidden_states[-1].float()   # hidden states only: skip the vocabulary head
            if pooling == "last":
                last = mask.sum(dim=1) - 1
                emb = hs[torch.arange(hs.shape[0], device=device), last]
            else:
                m = mask.unsqueeze(-1).to(hs.dtype)
                emb = (hs * m).sum(dim=1) / m.sum(dim=1)
            out.append(emb.cpu().numpy().astype(np.float32))
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def hidden_feature_set(ws, run_id: str, loaded, pooling: str, max_seq_length: int) -> fstore.FeatureSetInfo:
    """The feature set of (model weights, tokenizer, pooling, window), created on first use."""
    from ..models.tokenization import tokenizer_id

    if pooling not in POOLINGS:
        raise SettingError(None, [("pooling", f"{pooling!r}: choose last (RDS) or mean (RDS+)")])
    hidden = int(loaded.model.config.hidden_size)
    ident = {"format": FORMAT, "kind": POOLINGS[pooling], "model_sha256": loaded.sha256,
             "tokenizer_id": tokenizer_id(loaded.tokenizer), "max_seq_length": int(max_seq_length),
             "layer": "final hidden state", "dim": hidden, "dtype": "float32"}
    fsid = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    meta_features.insert_feature_set(ws, {
        "feature_set_id": fsid, "run_id": run_id, "lance_table": fstore.table_name(fsid),
        "grad_kind": POOLINGS[pooling], "bias_correction": False, "sketch_kind": "none", "sketch_seed": 0,
        "sketch_nnz": None, "n_params": hidden, "dim": hidden, "dtype": "float32", "compute_dtype": "float32",
        "max_seq_length": int(max_seq_length), "tokenizer_id": ident["tokenizer_id"], "module_order": [],
        "model_sha256": loaded.sha256, "params": ident, "lessdb_version": __version__})
    info = fstore.get_feature_set(ws, fsid)
    fstore.ensure_feature_table(ws, info)
    return info


def embed_candidates(ws, info: fstore.FeatureSetInfo, loaded, pool: str, ids: list[str], cand_version: int,
                     shard: tuple[int, int] = (0, 1), where: str | None = None, batch_size: int = 16,
                     commit_rows: int = 256, progress: bool = True) -> EmbedSummary:
    """Embed the candidates of `ids` in this shard that the feature set has neither stored nor excluded."""
    # one writer per embedding feature set and shard: two processes asked for the same embeddings at once (two
    # `select --method rds+` of one run, or a select beside `lessdb embed`) would both find them missing and both
    # append them; the second waits here and then finds them present
    with ws.write_lock(f"embed-{info.feature_set_id}-{shard[0]}of{shard[1]}"):
        return _embed_candidates(ws, info, loaded, pool, ids, cand_version, shard, where, batch_size, commit_rows,
                                 progress)


def _embed_candidates(ws, info, loaded, pool, ids, cand_version, shard, where, batch_size, commit_rows,
                      progress) -> EmbedSummary:
    from ..storage.candidates import read_candidates
    from ..models.tokenization import encode_conversation, pad_token_id

    t0 = time.monotonic()
    i, n = shard
    mine = [e for e in ids if shard_of(e, n) == i]
    present = fstore.present_example_ids(ws, info.feature_set_id, EPOCH, "candidate")
    skipped = meta_features.excluded_ids(ws, info.feature_set_id, "candidate", EPOCH)
    todo = [e for e in mine if e not in present and e not in skipped]
    summary = EmbedSummary(info.feature_set_id, info.lance_table, f"{i}/{n}", already_present=len(mine) - len(todo))
    job_id = f"{info.feature_set_id}/candidate/{EPOCH}/{i}of{n}"
    meta_features.start_job(ws, {"job_id": job_id, "feature_set_id": info.feature_set_id, "role": "candidate",
                                 "epoch": EPOCH, "shard_index": i, "shard_count": n, "where_sql": where,
                                 "candidates_version": cand_version, "adapter_sha256": None,
                                 "optimizer_sha256": None, "optimizer_step": None, "n_total": len(mine)})
    if todo:
        model, tok = loaded.model.eval(), loaded.tokenizer
        pooling = "last" if info.grad_kind == POOLINGS["last"] else "mean"
        pad = pad_token_id(tok)
        writer = FeatureWriter(ws, info, EPOCH, "candidate", job_id, commit_rows, 60.0)
        bar = Progress(f"embedding {info.grad_kind} shard {i}/{n}", total=len(todo), unit="candidates",
                       enabled=None if progress else False)
        for start in range(0, len(todo), commit_rows):
            table = read_candidates(ws, todo[start:start + commit_rows], pool=pool, version=cand_version,
                                    columns=["id", "messages"])
            enc, keep, excluded = [], [], []
            for cid, msgs in zip(table.column("id").to_pylist(), table.column("messages").to_pylist()):
                e = encode_conversation(tok, msgs, info.max_seq_length)
                if e.completion_tokens > 0:
                    enc.append(e)
                    keep.append(cid)
                else:
                    excluded.append((cid, EXCLUDED_NO_COMPLETION.format(n=info.max_seq_length)))
            vecs = (hidden_state_embeddings(model, enc, pad, pooling, batch_size) if enc
                    else np.zeros((0, info.dim), dtype=np.float32))
            writer.add(keep, vecs, np.linalg.norm(vecs, axis=1), excluded)
            bar.update(len(keep) + len(excluded))
        writer.flush()
        bar.close()
        summary.examples, summary.excluded = writer.written, writer.excluded
        summary.lance_version = writer.version
    meta_features.finish_job(ws, job_id)
    summary.seconds = time.monotonic() - t0
    return summary


def embed_run(ws, run_id: str, pooling: str, max_seq_length: int | None = None, shard: tuple[int, int] = (0, 1),
              where: str | None = None, device: str = "cpu", batch_size: int = 16,
              progress: bool = True) -> EmbedSummary:
    """`lessdb embed`: the run's pool (optionally filtered) into the (model, pooling, window) feature set."""
    from ..models.loading import load_base_model
    from ..runs.config import run_max_seq_length
    from ..storage import meta_runs
    from ..storage.candidates import candidates_version, select_candidate_ids

    if where is not None:   # before the run is read or a model loads; recorded with the job, like featurize's
        from ..storage.user_filter import check_filter

        check_filter(where)
    run = meta_runs.get_run(ws, run_id)
    loaded = load_base_model(ws, run["model_name"], device=device)
    if loaded.sha256 != run["model_sha256"]:
        raise LessdbError(f"model {run['model_name']} now has weights {loaded.sha256[:12]}…, not the run's")
    msl = int(max_seq_length or run_max_seq_length(run))
    info = hidden_feature_set(ws, run_id, loaded, pooling, msl)
    version = candidates_version(ws)
    ids = select_candidate_ids(ws, run["pool"], where, version)
    return embed_candidates(ws, info, loaded, run["pool"], ids, version, shard, where, batch_size,
                            progress=progress)


# -- RDS / RDS+ -------------------------------------------------------------------------------------------------
