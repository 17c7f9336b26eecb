"""Exactly-once Lance appends for a driver that commits fragments written elsewhere (pylance only; no DuckDB).

Lance does not deduplicate by transaction uuid: committing the same `lance.Transaction` twice (a blind retry
after a lost response) appends its rows twice. So the driver gives every commit its own uuid and, before any
retry, looks for that uuid among the transactions committed since it read the table. The uuid and the
`lessdb.*` properties live in Lance's transaction file, so a driver killed between the Lance commit and its
DuckDB record can be reconciled later (`job_transactions`).
"""
from __future__ import annotations

import json
import time
import uuid as uuidlib

import lance

RETRIES = 5


def open_dataset(uri: str, storage_options: dict | None, version: int | None = None):
    return lance.dataset(uri, version=version, storage_options=storage_options)


def find_transaction(uri: str, txn_uuid: str, after_version: int, storage_options: dict | None) -> int | None:
    """The version that committed `txn_uuid`, looking at versions after `after_version` (None: not committed)."""
    ds = open_dataset(uri, storage_options)
    for version in range(int(after_version) + 1, ds.latest_version + 1):
        txn = ds.read_transaction(version)
        if txn is not None and txn.uuid == txn_uuid:
            return version
    return None


def commit_append(uri: str, fragments: list, properties: dict[str, str], storage_options: dict | None,
                  fault: callable = None) -> dict:
    """Commit `fragments` as ONE Append (one new version). Returns {txn_uuid, read_version, lance_version}.

    An exception whose outcome is unknown is retried only after checking that the transaction did not land;
    Lance itself rebases concurrent appends and merge_inserts (they never conflict with an Append)."""
    ds = open_dataset(uri, storage_options)
    base = ds.version
    txn = lance.Transaction(base, lance.LanceOperation.Append(list(fragments)), uuid=str(uuidlib.uuid4()),
                            transaction_properties={k: str(v) for k, v in properties.items()})
    for attempt in range(RETRIES):
        try:
            new = lance.LanceDataset.commit(uri, txn, storage_options=storage_options)
            version = new.version
        except Exception:  # noqa: BLE001 - outcome unknown: look before retrying
            version = find_transaction(uri, txn.uuid, base, storage_options)
            if version is None:
                if attempt == RETRIES - 1:
                    raise
                time.sleep(0.2 * (attempt + 1))
                continue
        if fault is not None:
            fault()
        return {"txn_uuid": txn.uuid, "read_version": base, "lance_version": int(version)}
    raise AssertionError("unreachable")


def job_transactions(uri: str, job_id: str, after_version: int, storage_options: dict | None) -> list[dict]:
    """Every lessdb commit of `job_id` after `after_version`, read back from Lance's transaction files:
    [{txn_uuid, read_version, lance_version, units, n_rows, n_fragments, exclusions}]."""
    ds = open_dataset(uri, storage_options)
    out = []
    for version in range(int(after_version) + 1, ds.latest_version + 1):
        txn = ds.read_transaction(version)
        props = (txn.transaction_properties or {}) if txn is not None else {}
        if props.get("lessdb.job") != job_id:
            continue
        out.append({"txn_uuid": txn.uuid, "read_version": int(txn.read_version), "lance_version": version,
                    "units": props.get("lessdb.units", ""), "n_rows": int(props.get("lessdb.rows", 0)),
                    "n_fragments": len(getattr(txn.operation, "fragments", []) or []),
                    "exclusions": json.loads(props.get("lessdb.excluded", "[]"))})
    return out
