"""Metadata queries for pools and ingests."""
from __future__ import annotations

import json


def version_producers(ws) -> dict[tuple[str, int], str]:
    """(lance table, version) -> a short description of what made it."""
    out: dict[tuple[str, int], str] = {}
    with ws.duck.connect(read_only=True) as con:
        rows = con.execute("SELECT lance_table, lance_version, pool, string_agg(ingest_id::VARCHAR, ',') "
                           "FROM ingests WHERE lance_version IS NOT NULL GROUP BY ALL").fetchall()
        repairs = con.execute("SELECT lance_version, repair_id, kind, n_removed FROM candidate_repairs "
                              "WHERE status = 'complete'").fetchall()
    for table, version, pool, ids in rows:
        out[(table, version)] = f"ingest {ids} into pool {pool}"
    for version, repair_id, kind, n_removed in repairs:
        what = "duplicate rows" if kind == "duplicates" else f"rows ({kind})"
        out.setdefault(("candidates", version), f"repair {repair_id}: removed {n_removed} {what}")
    return out


def recorded_candidates_version(ws, lance_table: str = "candidates") -> int | None:
    """The newest `candidates` version a recorded ingest or a complete repair (storage/candidate_repair.py)
    produced (None: no ingest wrote rows yet)."""
    with ws.duck.connect(read_only=True) as con:
        return con.execute("SELECT max(v) FROM (SELECT lance_version AS v FROM ingests WHERE lance_table = ? "
                           "UNION ALL SELECT lance_version FROM candidate_repairs WHERE status = 'complete' "
                           "AND ? = 'candidates')", [lance_table, lance_table]).fetchone()[0]


def ingest_rows(ws) -> list[dict]:
    """Every recorded ingest: ingest_id, pool, n_added, lance_table, lance_version, source, input_uri."""
    cols = ["ingest_id", "pool", "n_added", "lance_table", "lance_version", "source", "input_uri"]
    with ws.duck.connect(read_only=True) as con:
        rows = con.execute(f"SELECT {', '.join(cols)} FROM ingests ORDER BY ingest_id").fetchall()
    return [dict(zip(cols, r)) for r in rows]


def later_ingest_of_same_file(ws, ingest_id: int) -> int | None:
    """A later ingest of the same file content (sha256) into the same pool, if any."""
    with ws.duck.connect(read_only=True) as con:
        row = con.execute("SELECT min(b.ingest_id) FROM ingests a JOIN ingests b ON b.pool = a.pool "
                          "AND b.file_sha256 = a.file_sha256 AND b.ingest_id > a.ingest_id WHERE a.ingest_id = ?",
                          [ingest_id]).fetchone()
    return row[0] if row else None


def committed_ingest_ids(ws) -> set[int]:
    with ws.duck.connect(read_only=True) as con:
        return {r[0] for r in con.execute("SELECT ingest_id FROM ingests").fetchall()}


def next_ingest_id(ws, floor: int = 0) -> int:
    with ws.duck.connect(read_only=True) as con:
        current = con.execute("SELECT coalesce(max(ingest_id), 0) FROM ingests").fetchone()[0]
    return max(current, floor) + 1


INGEST_COLUMNS = ("ingest_id", "source", "file_name", "file_size", "file_sha256", "format", "n_records", "n_added",
                  "n_invalid", "n_dup_within", "n_dup_in_pool", "n_dup_other_pools", "n_truncated_tail", "input_uri",
                  "input_format", "compression", "input_columns", "schema_hash", "column_map", "minhash")
SKIPPED_COLUMNS = ("ingest_id", "file", "line", "field", "reason", "row_group", "row_index")


def record_ingests(ws, pool: str, files: list[dict], lance_table: str, lance_version: int | None,
                   lessdb_version: str, skipped: list[dict]) -> None:
    """One transaction: the pool (if new), one ingests row per input file, and every skipped record. `files`:
    dicts with the INGEST_COLUMNS (missing ones are NULL); `skipped`: dicts with the SKIPPED_COLUMNS."""
    cols = ", ".join(INGEST_COLUMNS)
    with ws.duck.transaction() as con:
        con.execute("INSERT INTO pools (name) VALUES (?) ON CONFLICT DO NOTHING", [pool])
        for f in files:
            con.execute(f"INSERT INTO ingests ({cols}, pool, lance_table, lance_version, lessdb_version) "
                        f"VALUES ({', '.join('?' * (len(INGEST_COLUMNS) + 4))})",
                        [f.get(c) for c in INGEST_COLUMNS] +
                        [pool, lance_table, lance_version if f["n_added"] else None, lessdb_version])
        if skipped:
            con.executemany(f"INSERT INTO ingest_skipped ({', '.join(SKIPPED_COLUMNS)}) "
                            f"VALUES ({', '.join('?' * len(SKIPPED_COLUMNS))})",
                            [[s.get(c) for c in SKIPPED_COLUMNS] for s in skipped])


def list_pools(ws) -> list[dict]:
    with ws.duck.connect(read_only=True) as con:
        rel = con.execute(
            "SELECT p.name AS pool, count(i.ingest_id) AS ingests, coalesce(sum(i.n_added), 0) - coalesce(("
            " SELECT sum(r.n_removed) FROM candidate_repair_rows r JOIN candidate_repairs c USING (repair_id) "
            " JOIN ingests j ON j.ingest_id = r.ingest_id WHERE j.pool = p.name AND c.status = 'complete'), 0) "
            "AS candidates, "
            "coalesce(sum(i.n_invalid), 0) AS skipped_invalid, "
            "coalesce(sum(i.n_dup_within + i.n_dup_in_pool), 0) AS duplicates_dropped, "
            "coalesce(sum(i.n_dup_other_pools), 0) AS shared_with_other_pools, p.created_at "
            "FROM pools p LEFT JOIN ingests i ON i.pool = p.name GROUP BY p.name, p.created_at ORDER BY p.name")
        cols = [d[0] for d in rel.description]
        return [dict(zip(cols, r)) for r in rel.fetchall()]


def pool_exists(ws, pool: str) -> bool:
    with ws.duck.connect(read_only=True) as con:
        return bool(con.execute("SELECT count(*) FROM pools WHERE name = ?", [pool]).fetchone()[0])


def ingest_details(ws, ingest_id: int) -> dict:
    with ws.duck.connect(read_only=True) as con:
        rel = con.execute("SELECT * FROM ingests WHERE ingest_id = ?", [ingest_id])
        cols = [d[0] for d in rel.description]
        row = rel.fetchone()
    return json.loads(json.dumps(dict(zip(cols, row)), default=str)) if row else {}
