"""RDS / RDS+ scores from the stored embedding feature set (featurize/hidden.py) instead of a forward pass over
the whole pool per selection: embed what is missing of the filtered candidates, then stream the stored
vectors at a pinned table version through the same accumulator as gradient features (cosine with each
subtask's query). A replay reads the recorded version, so it reproduces the scores bit for bit."""
from __future__ import annotations

import numpy as np

from ..storage import meta_selections as meta
from ..storage.lance_tables import CANDIDATES
from .scoring import ScoreAccumulator

QUERY_EPOCH = 1   # the query set's key (select builds RDS queries as one "checkpoint")


def stored_hidden_scores(ws, plan, ids: list[str], queries, mask: np.ndarray, unscorable: dict, loaded,
                         batch_rows: int = 4096, progress: bool = True):
    """(per-subtask scores [N, m], valid [N], unscorable counts); records the feature set and its version."""
    from ..featurize.embeddings import EPOCH, embed_candidates, hidden_feature_set
    from .reading import IdIndex

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
