"""The rows an ingest will add, held on local disk (an Arrow IPC file in `<workspace>/tmp/`) until every input
has been read and checked: a bad record anywhere stops the ingest before LanceDB is touched, every record is
parsed and normalised once, and memory stays bounded by one batch whatever the size of the input.

Ingests hold the `candidates` write lock while a spill file exists, so one found under the lock is what a killed
ingest left behind: `remove_stale` deletes it. Nothing ever reads a spill file but the ingest that wrote it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from ..conversation import Conversation
from ..storage.lance_tables import CANDIDATE_SCHEMA, MESSAGE_TYPE

FLUSH_ROWS = 8192
PREFIX = "ingest-"


def spill_folder(ws) -> Path:
    return ws.root / "tmp"


def remove_stale(ws) -> list[Path]:
    """Delete spill files of killed ingests (call with the `candidates` write lock held)."""
    folder = spill_folder(ws)
    removed = []
    if folder.is_dir():
        for path in folder.glob(PREFIX + "*.arrow"):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


class RowSpill:
    """Collects candidate rows column by column, writes them in batches of FLUSH_ROWS, reads them back."""

    def __init__(self, ws, name: str):
        self.path = spill_folder(ws) / f"{PREFIX}{name}-{os.getpid()}.arrow"
        self.rows = 0
        self._writer = None
        self._sink = None
        self._reset()

    def _reset(self) -> None:
        self._cols: dict[str, list] = {name: [] for name in CANDIDATE_SCHEMA.names if name != "messages"}
        self._roles: list[str] = []
        self._contents: list[str] = []
        self._offsets: list[int] = [0]

    def add(self, conv: Conversation, cid: str, pool: str, ingest_id: int, metadata: str | None) -> None:
        cols = self._cols
        prompt = completion = 0
        for role, content in conv.messages:
            self._roles.append(role)
            self._contents.append(content)
            if role == "assistant":
                completion += len(content)
            else:
                prompt += len(content)
        self._offsets.append(len(self._roles))
        cols["key"].append(f"{pool}/{cid}")
        cols["id"].append(cid)
        cols["pool"].append(pool)
        cols["ingest_id"].append(ingest_id)
        cols["source_dataset"].append(conv.source_dataset)
        cols["source_id"].append(conv.source_id)
        cols["n_turns"].append(len(conv.messages))
        cols["prompt_chars"].append(prompt)
        cols["completion_chars"].append(completion)
        cols["total_chars"].append(prompt + completion)
        cols["metadata"].append(metadata)
        self.rows += 1
        if len(cols["id"]) >= FLUSH_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self._cols["id"]:
            return
        structs = pa.StructArray.from_arrays([pa.array(self._roles, pa.string()), pa.array(self._contents, pa.string())],
                                             fields=list(MESSAGE_TYPE))
        messages = pa.ListArray.from_arrays(pa.array(self._offsets, pa.int32()), structs)
        arrays = [messages if f.name == "messages" else pa.array(self._cols[f.name], f.type) for f in CANDIDATE_SCHEMA]
        batch = pa.RecordBatch.from_arrays(arrays, schema=CANDIDATE_SCHEMA)
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._sink = pa.OSFile(str(self.path), "wb")
            self._writer = pa.ipc.new_file(self._sink, CANDIDATE_SCHEMA)
        self._writer.write_batch(batch)
        self._reset()

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Every row added, in order (call once, after the last `add`); read one batch at a time."""
        self._flush()
        self._close_writer()
        if not self.rows:
            return
        with pa.OSFile(str(self.path), "rb") as source:
            reader = pa.ipc.open_file(source)
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._writer = self._sink = None

    def __enter__(self) -> "RowSpill":
        return self

    def __exit__(self, *exc) -> None:
        self._close_writer()
        self.path.unlink(missing_ok=True)
