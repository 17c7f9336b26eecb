"""What `lessdb verify` reads from DuckDB to check the files against (issue 23): every base table read through
once (each block checked against its checksum), the Lance versions the catalogue refers to and who refers to
them, and the one η̄ repair."""
from __future__ import annotations

import json


def read_every_table(ws, batch_rows: int = 65536) -> dict[str, int]:
    """Read every row of every base table (DuckDB checks each block's checksum as it reads it, and fails on a file
    that ends early); returns rows per table. Raises the library's error at the first block that fails."""
    import duckdb

    from ..errors import WorkspaceDamaged
    from .damage import describe

    counts = {}
    try:
        with ws.duck.connect(read_only=True) as con:
            tables = [r[0] for r in
                      con.execute("SELECT table_name FROM duckdb_tables() ORDER BY table_name").fetchall()]
            for table in tables:
                reader = con.sql(f'SELECT * FROM "{table}"').to_arrow_reader(batch_rows)
                counts[table] = sum(batch.num_rows for batch in reader)
    except duckdb.Error as exc:   # any block that cannot be read back is damage here
        raise WorkspaceDamaged(f"the metadata database cannot be read ({describe(exc)})") from exc
    return counts


def recorded_versions(ws) -> tuple[dict[str, dict[int, list[str]]], dict[str, int]]:
    """({Lance table: {version: [who reads it, e.g. "ingest 3", "selection sel-…"]}}, {Lance table: the newest
    version the catalogue knows of}). The first holds the versions readers pin (ingests' results, the candidate
    versions feature jobs listed their examples from, selections' reads, folded copies); the second also counts
    what feature jobs and Ray commits wrote, which nothing reads again but which must not be missing."""
    out: dict[str, dict[int, list[str]]] = {}
    newest: dict[str, int] = {}

    def add(table, version, who):
        if table is not None and version is not None:
            newest[str(table)] = max(newest.get(str(table), -1), int(version))
            if who is not None:
                out.setdefault(str(table), {}).setdefault(int(version), []).append(who)

    with ws.duck.connect(read_only=True) as con:
        for iid, table, version in con.execute("SELECT ingest_id, lance_table, lance_version FROM ingests").fetchall():
            add(table, version, f"ingest {iid}")
        for job, fs_table, cversion, fversion in con.execute(
                "SELECT j.job_id, f.lance_table, j.candidates_version, j.lance_version FROM feature_jobs j "
                "JOIN feature_sets f USING (feature_set_id)").fetchall():
            add("candidates", cversion, f"feature job {job}")
            add(fs_table, fversion, None)
        for sid, versions in con.execute("SELECT selection_id, table_versions FROM selections").fetchall():
            for table, version in (json.loads(versions) if isinstance(versions, str) else versions or {}).items():
                add(table, version, f"selection {sid}")
        for txn, fs_table, version in con.execute(
                "SELECT c.txn_uuid, f.lance_table, c.lance_version FROM feature_commits c "
                "JOIN feature_sets f USING (feature_set_id)").fetchall():
            add(fs_table, version, None)
        for fsid, low, table, version, source, fs_table in con.execute(
                "SELECT c.feature_set_id, c.low_dim, c.lance_table, c.lance_version, c.source_version, f.lance_table "
                "FROM folded_copies c JOIN feature_sets f USING (feature_set_id)").fetchall():
            add(table, version, f"folded copy {fsid}/{low}")
            add(fs_table, source, f"folded copy {fsid}/{low}")
    return out, newest


def drop_fragments(ws, table: str, fragment_ids: set[int], why: str) -> int:
    """A new version of `table` without these fragments (their data files are lost); returns that version."""
    import lance

    with ws.lance.writing():
        ds = ws.lance.dataset(table)
        op = lance.LanceOperation.Delete([], sorted(fragment_ids), why)
        return lance.LanceDataset.commit(ws.lance.table_uri(table), op, read_version=ds.version,
                                         storage_options=ws.lance.storage_options).version


def set_checkpoint_mean_lr(ws, run_id: str, epoch: int, mean_lr: float) -> None:
    with ws.duck.connect() as con:
        con.execute("UPDATE checkpoints SET mean_lr = ? WHERE run_id = ? AND epoch = ?", [mean_lr, run_id, epoch])


def require_versions_present(ws, table: str) -> None:
    """Refuse to extend a Lance table whose newest manifests were deleted while a selection still pins one of
    those versions: a new write would reuse the lost version's number for other rows, and a replay of that
    selection would read them. `lessdb verify` says what restores it. (A table removed on purpose and written
    again, which no selection read, is fine: `verify` then gives the featurize command that fills it.)"""
    from ..errors import WorkspaceDamaged

    if not ws.lance.has_table(table):
        return
    with ws.duck.connect(read_only=True) as con:
        pinned = con.execute(
            "SELECT max(v) FROM (SELECT CAST(json_extract(table_versions, '$.\"' || ? || '\"') AS BIGINT) AS v "
            "FROM selections UNION ALL SELECT c.source_version FROM folded_copies c JOIN feature_sets f "
            "USING (feature_set_id) WHERE f.lance_table = ?)", [table, table]).fetchone()[0]
    latest = ws.lance.version(table)
    if pinned is not None and latest is not None and int(pinned) > latest:
        raise WorkspaceDamaged(f"table {table} ends at version {latest}, but a selection read its version {pinned}: "
                               f"the manifests of the versions after {latest} are missing")
