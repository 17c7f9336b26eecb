"""Near-duplicate control while picking (`--dedup COSINE`, `--dedup-text JACCARD`).

`--dedup t`: a candidate is skipped when its stored feature cosine with an already selected member exceeds t.
With several checkpoints the cosine is their η̄-weighted mean, Σᵢ wᵢ cos(xᵢ(a), xᵢ(b)) / Σᵢ wᵢ — the same
weighting the score uses — computed as one cosine of concatenated vectors √(wᵢ/Σw)·x̂ᵢ. Vectors are read from
the feature table at the version the selection pins, in blocks along the ranking (only the candidates the picker
actually looks at are read). Cost: one product with the members so far per candidate looked at (about
k² · d · #ckpt / 2 flops in all) and k · d · #ckpt float32 of memory: 5,000 members at d = 8192 over 4 checkpoints
are 650 MB and 4·10¹¹ flops (minutes on a laptop CPU); for larger k use --dedup-text or a smaller d.

`--dedup-text j`: the estimated Jaccard similarity of word-3-gram MinHash signatures (ingest/minhash.py) exceeds j.
"""
from __future__ import annotations

import numpy as np

from ..ingest.minhash import NUM_PERM, PARAMS, SIGNATURE_ID, ensure_signatures, jaccard
from ..settings import ref
from .config import invalid

FETCH_BLOCK = 512


class GrowingRows:
    """The members' vectors so far, in a buffer that doubles when full (appending by np.vstack would copy
    every member again for each new one)."""

    def __init__(self, width: int, dtype):
        self.buf = np.zeros((64, width), dtype=dtype)
        self.n = 0

    def append(self, row: np.ndarray) -> None:
        if self.n == len(self.buf):
            self.buf = np.concatenate([self.buf, np.zeros_like(self.buf)])
        self.buf[self.n] = row
        self.n += 1

    @property
    def rows(self) -> np.ndarray:
        return self.buf[:self.n]


class FeatureDedup:
    def __init__(self, ws, plan, ids: list[str], order: np.ndarray, threshold: float):
        from ..storage import meta_runs
        from ..storage.features import vector_view

        fs = plan.fs
        if fs is None:
            raise invalid([("dedup", "compares stored gradient features, and this selection has no feature set "
                                     f"(run `lessdb featurize --run {plan.run_id}`), or use {ref('dedup_text')}")])
        self._vector_view = vector_view
        self.ws, self.fs, self.ids, self.threshold = ws, fs, ids, threshold
        epochs = list(plan.epochs) or [c.epoch for c in meta_runs.list_checkpoints(ws, fs.run_id)]
        weights = list(plan.weights) or [1.0] * len(epochs)
        self.epochs = epochs
        total = float(sum(weights))
        self.scale = {e: np.float32(np.sqrt(w / total)) for e, w in zip(epochs, weights)}
        if fs.lance_table not in plan.versions:
            plan.versions[fs.lance_table] = ws.lance.version(fs.lance_table)
        self.version = plan.versions[fs.lance_table]
        self.order = order
        self.position = {int(r): p for p, r in enumerate(order)}
        self.vectors: dict[int, np.ndarray] = {}
        self.members = GrowingRows(fs.dim * len(epochs), np.float32)
        self.member_rows: list[int] = []      # every member seen so far
        self._member_index: list[int] = []    # the members with features: row of each line of self.members
        self.record = {"feature_cosine": threshold, "feature_set_id": fs.feature_set_id, "checkpoints": epochs,
                       "weights": weights, "feature_table_version": self.version}

    def _fetch(self, row: int) -> None:
        """Read the block of the ranking that starts at `row` (rows already read are left out)."""
        from ..storage import meta_selections as meta

        start = self.position.get(row, 0)
        block = [int(r) for r in self.order[start:start + 4 * FETCH_BLOCK] if int(r) not in self.vectors]
        block = ([row] if row not in block else []) + block[:FETCH_BLOCK]
        want = {self.ids[r]: r for r in block}
        parts: dict[int, dict[int, np.ndarray]] = {}
        for batch in meta.scan_feature_rows(self.ws, self.fs.lance_table, self.version, "candidate", self.epochs,
                                            list(want)):
            vecs = self._vector_view(batch.column("vector"), self.fs.dim)
            for i, (eid, epoch) in enumerate(zip(batch.column("example_id").to_pylist(),
                                                 batch.column("epoch").to_pylist())):
                got = parts.setdefault(want[eid], {})
                if epoch not in got:   # the first stored row, as scoring reads it
                    v = vecs[i].astype(np.float32)
                    n = float(np.linalg.norm(v))
                    got[epoch] = v / n if n > 0 else v
        for r in block:
            got = parts.get(r, {})
            if all(e in got for e in self.epochs):
                self.vectors[r] = np.concatenate([self.scale[e] * got[e] for e in self.epochs])
            else:
                self.vectors[r] = None   # no features: cannot be compared, never rejected for it

    def __call__(self, row: int, chosen: list[int]):
        while len(self.member_rows) < len(chosen):
            r = chosen[len(self.member_rows)]
            v = self._vector(r)
            self.member_rows.append(r)
            if v is not None:
                self.members.append(v)
                self._member_index.append(r)
        v = self._vector(row)
        if v is None or not self.members.n:
            return None
        sims = self.members.rows @ v
        j = int(np.argmax(sims))
        if sims[j] > self.threshold:
            return ("near_duplicate_features", self._member_index[j], float(sims[j]))
        return None

    def _vector(self, row: int):
        if row not in self.vectors:
            self._fetch(row)
        return self.vectors[row]


class TextDedup:
    """The picker's `--dedup-text` check: reject a candidate whose estimated Jaccard with a member exceeds j."""

    def __init__(self, ws, plan, ids: list[str], order: np.ndarray, threshold: float):
        from ..storage.lance_tables import CANDIDATES

        self.ids, self.threshold = ids, threshold
        self.ws, self.pool, self.version = ws, plan.pool, plan.versions[CANDIDATES]
        self.sigs: dict[str, np.ndarray] = {}
        self.order = order
        self.position = {int(r): p for p, r in enumerate(order)}
        self.members = GrowingRows(NUM_PERM, np.uint32)
        self.member_rows: list[int] = []
        self.record = {"text_jaccard": threshold, "minhash": dict(PARAMS, signature_id=SIGNATURE_ID)}

    def _sig(self, row: int) -> np.ndarray:
        cid = self.ids[row]
        if cid not in self.sigs:   # read (or compute) the next block of the ranking at once
            start = self.position.get(row, 0)
            block = {cid} | {self.ids[int(r)] for r in self.order[start:start + 1024]}
            self.sigs.update(ensure_signatures(self.ws, self.pool, self.version,
                                               sorted(i for i in block if i not in self.sigs)))
        return self.sigs[cid]

    def __call__(self, row: int, chosen: list[int]):
        while len(self.member_rows) < len(chosen):
            r = chosen[len(self.member_rows)]
            self.member_rows.append(r)
            self.members.append(self._sig(r))
        if not self.members.n:
            return None
        sims = jaccard(self._sig(row), self.members.rows)
        j = int(np.argmax(sims))
        if sims[j] > self.threshold:
            return ("near_duplicate_text", self.member_rows[j], float(sims[j]))
        return None


def make_reject(ws, plan, ids: list[str], order_score: np.ndarray, valid: np.ndarray, opts: dict):
    """The picker's reject callback for the selection's dedup options, and what to record about it."""
    from .picking import ranking

    order = ranking(order_score, ids, valid)
    checks, record = [], {}
    if opts.get("dedup") is not None:
        fd = FeatureDedup(ws, plan, ids, order, opts["dedup"])
        checks.append(fd)
        record.update(fd.record)
    if opts.get("dedup_text") is not None:
        td = TextDedup(ws, plan, ids, order, opts["dedup_text"])
        checks.append(td)
        record.update(td.record)

    def reject(row: int, chosen: list[int]):
        for check in checks:
            verdict = check(row, chosen)
            if verdict is not None:
                return verdict
        return None

    return reject, record
