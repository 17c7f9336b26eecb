"""Ingest beyond JSONL (issue 24): Parquet (file, folder, glob), Arrow IPC files and streams, Hugging Face
save_to_disk folders, gzip/zstd JSON, objects in memory; column maps; every other column kept as queryable
metadata; bad columnar input located by file, row group, row and column with nothing written; planning by
record (issue 23 item 5) and non-regular files (item 11); export of the original columns (JSONL, Parquet, hf
folders, datasets.Dataset) and the round trip JSONL -> Parquet -> HF folder -> ingest -> export."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from datetime import datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import REPO, run_cli, write_jsonl
from lessdb.conversation import content_hash
from lessdb.errors import InputError
from lessdb.ingest import ingest_files, ingest_object
from lessdb.storage.candidates import read_candidates, select_candidate_ids
from lessdb.storage.user_sql import run_readonly_sql

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()


def records(n: int, start: int = 0) -> list[dict]:
    """Tulu-style records with extra columns of several types (the metadata)."""
    out = []
    for i in range(start, start + n):
        out.append({"id": f"u{i}", "messages": [
            {"role": "user", "content": f"question {i}: {' '.join(WORDS[: 1 + i % 9])}"},
            {"role": "assistant", "content": f"answer {i}"}],
            "source": "flan_v2" if i % 3 == 0 else "oasst", "score": i / 4, "tags": [f"t{i % 2}"]})
    return out


def state(ws):
    rows = run_readonly_sql(ws, "SELECT (SELECT count(*) FROM candidates), (SELECT count(*) FROM ingests), "
                                "(SELECT count(*) FROM pools), (SELECT count(*) FROM ingest_skipped)").rows[0]
    return ws.lance.version("candidates"), rows, sorted(p.name for p in (ws.root / "tmp").glob("*")) \
        if (ws.root / "tmp").exists() else []


def pool_rows(ws, pool: str) -> dict[str, dict]:
    return {r["id"]: r for r in read_candidates(ws, pool=pool).to_pylist()}


def write_arrow_file(path, table: pa.Table, stream: bool = False, chunk: int | None = None):
    with pa.OSFile(str(path), "wb") as sink:
        opener = pa.ipc.new_stream if stream else pa.ipc.new_file
        with opener(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=chunk)
    return path


# source_dataset of records that name none: a file's stem (without .gz/.zst), a folder's name, a glob's folder
LABELS = {"folder": "shards", "glob": "data", "array": "array", "magic": "noext"}


def test_every_input_format_gives_the_same_candidates_and_metadata(workspace, tmp_path):
    recs = records(40)
    table = pa.Table.from_pylist(recs)
    write_jsonl(tmp_path / "pool.jsonl", recs)
    (tmp_path / "pool.jsonl.gz").write_bytes(gzip.compress((tmp_path / "pool.jsonl").read_bytes()))
    with pa.output_stream(str(tmp_path / "pool.jsonl.zst"), compression="zstd") as out:
        out.write((tmp_path / "pool.jsonl").read_bytes())
    (tmp_path / "array.json").write_text(json.dumps(recs))              # one line, as json.dump(list) writes
    pq.write_table(table, tmp_path / "pool.parquet", row_group_size=16)  # 3 row groups
    shards = tmp_path / "shards" / "data"
    shards.mkdir(parents=True)
    for i in range(3):
        pq.write_table(table.slice(i * 15, 15), shards / f"train-{i:05d}-of-00003.parquet")
    (tmp_path / "shards" / "README.md").write_text("# a Hub-style dataset card, not data")
    write_arrow_file(tmp_path / "pool.feather", table, chunk=7)
    write_arrow_file(tmp_path / "pool.arrows", table, stream=True, chunk=9)
    (tmp_path / "noext").write_bytes((tmp_path / "pool.parquet").read_bytes())   # magic bytes decide
    inputs = {"jsonl": ["pool.jsonl"], "gz": ["pool.jsonl.gz"], "zst": ["pool.jsonl.zst"], "array": ["array.json"],
              "parquet": ["pool.parquet"], "folder": ["shards"], "glob": ["shards/data/train-*.parquet"],
              "feather": ["pool.feather"], "stream": ["pool.arrows"], "magic": ["noext"]}
    for pool, files in inputs.items():
        report = ingest_files(workspace, [tmp_path / f for f in files], pool=pool, progress=False)
        assert report.total("n_added") == 40 and report.total("n_records") == 40, pool
        assert {f.format for f in report.files} == {"messages"}, pool
    want = {content_hash(r["messages"]): r for r in recs}
    for pool in inputs:
        got = pool_rows(workspace, pool)
        assert got.keys() == want.keys(), pool
        for cid, row in got.items():
            src = want[cid]
            assert row["source_id"] == src["id"] and row["messages"] == src["messages"], pool
            assert json.loads(row["metadata"]) == {"source": src["source"], "score": src["score"],
                                                   "tags": src["tags"]}, pool
            assert row["source_dataset"] == LABELS.get(pool, "pool"), pool
    ingests = run_readonly_sql(workspace, "SELECT pool, input_format, compression, file_name, input_uri, "
                                          "input_columns, schema_hash FROM ingests ORDER BY ingest_id").as_dicts()
    by_pool = {}
    for row in ingests:
        by_pool.setdefault(row["pool"], []).append(row)
    assert [r["file_name"] for r in by_pool["folder"]] == [f"train-{i:05d}-of-00003.parquet" for i in range(3)]
    assert by_pool["gz"][0]["compression"] == "gzip" and by_pool["zst"][0]["compression"] == "zstd"
    assert by_pool["stream"][0]["input_format"] == "arrow" and by_pool["magic"][0]["input_format"] == "parquet"
    assert by_pool["jsonl"][0]["input_uri"] == str(tmp_path / "pool.jsonl")
    assert json.loads(by_pool["parquet"][0]["input_columns"]) == ["id", "messages", "source", "score", "tags"]
    assert sorted(json.loads(by_pool["jsonl"][0]["input_columns"])) == sorted(["id", "messages", "source", "score", "tags"])
    # one schema, one hash, per kind of input: the Arrow files share theirs
    assert len({r[0]["schema_hash"] for p, r in by_pool.items() if p in ("parquet", "feather", "stream")}) == 1


def test_metadata_is_queryable_from_where_and_sql(workspace, tmp_path):
    recs = records(30)
    pq.write_table(pa.Table.from_pylist(recs), tmp_path / "p.parquet")
    ingest_files(workspace, [tmp_path / "p.parquet"], pool="p", progress=False)
    flan = sorted(content_hash(r["messages"]) for r in recs if r["source"] == "flan_v2")
    assert select_candidate_ids(workspace, "p", "metadata->>'source' = 'flan_v2'") == flan
    assert select_candidate_ids(workspace, "p", "json_extract_string(metadata, '$.source') = 'flan_v2'") == flan
    high = sorted(content_hash(r["messages"]) for r in recs if r["score"] > 5)
    assert select_candidate_ids(workspace, "p", "(metadata->>'score')::DOUBLE > 5") == high
    out = json.loads(run_cli("sql", "SELECT metadata->>'source' AS s, count(*) AS n FROM candidates GROUP BY 1 "
                                    "ORDER BY 1", "--json", workspace=workspace.root).stdout)
    assert out == [{"s": "flan_v2", "n": 10}, {"s": "oasst", "n": 20}]


def test_column_map_and_forced_formats(workspace, tmp_path):
    recs = [{"uid": f"x{i}", "conversation": r["messages"], "origin": f"set{i % 2}", "other": i}
            for i, r in enumerate(records(12))]
    pq.write_table(pa.Table.from_pylist(recs), tmp_path / "odd.parquet")
    with pytest.raises(InputError, match="no record shape fits its columns.*--map") as err:
        ingest_files(workspace, [tmp_path / "odd.parquet"], pool="m", progress=False)
    assert "uid, conversation, origin, other" in str(err.value)
    report = ingest_files(workspace, [tmp_path / "odd.parquet"], pool="m", progress=False,
                          columns={"messages": "conversation", "id": "uid", "dataset": "origin"})
    assert report.total("n_added") == 12
    rows = sorted(pool_rows(workspace, "m").values(), key=lambda r: int(r["source_id"][1:]))
    assert [r["source_id"] for r in rows] == [f"x{i}" for i in range(12)]
    assert {r["source_dataset"] for r in rows} == {"set0", "set1"}
    assert [json.loads(r["metadata"]) for r in rows] == [{"other": i} for i in range(12)]
    assert json.loads(run_readonly_sql(workspace, "SELECT column_map FROM ingests").rows[0][0]) == {
        "messages": "conversation", "id": "uid", "dataset": "origin"}
    # the same map on JSON records, through the CLI; and a file format forced on a file without a suffix
    write_jsonl(tmp_path / "odd.data", recs)
    out = run_cli("ingest", tmp_path / "odd.data", "--pool", "m2", "--format", "jsonl", "--map",
                  "messages=conversation", "--map", "id=uid", "--json", workspace=workspace.root)
    assert json.loads(out.stdout)["n_added"] == 12
    assert pool_rows(workspace, "m2").keys() == pool_rows(workspace, "m").keys()
    for bad, words in ((["nosuch=conversation"], "not a field lessdb reads"), (["messages"], "FIELD=COLUMN"),
                       (["messages=a", "messages=b"], "mapped twice")):
        with pytest.raises(InputError, match=words):
            ingest_files(workspace, [tmp_path / "odd.parquet"], pool="m3", columns=bad, progress=False)
    # a forced shape that the columns lack
    with pytest.raises(InputError, match="has no column 'instruction'"):
        ingest_files(workspace, [tmp_path / "odd.parquet"], pool="m3", fmt="alpaca", progress=False)


def test_objects_in_memory(workspace, tmp_path):
    pd = pytest.importorskip("pandas")
    datasets = pytest.importorskip("datasets")
    recs = records(25)
    want = {content_hash(r["messages"]) for r in recs}
    table = pa.Table.from_pylist(recs)
    objects = {"table": table, "reader": pa.RecordBatchReader.from_batches(table.schema, table.to_batches(7)),
               "frame": pd.DataFrame(recs), "hf": datasets.Dataset.from_list(recs),
               "hfiter": datasets.Dataset.from_list(recs).to_iterable_dataset(), "dicts": recs,
               "gen": (dict(r) for r in recs)}
    for pool, obj in objects.items():
        report = workspace.ingest(obj, pool=pool, progress=False)
        assert report.total("n_added") == 25, pool
        assert set(pool_rows(workspace, pool)) == want, pool
        assert json.loads(next(iter(pool_rows(workspace, pool).values()))["metadata"]).keys() == {"source", "score", "tags"}
    assert recs[0]["id"] == "u0" and "messages" in recs[0]     # the caller's dicts are untouched
    sources = [r[0] for r in run_readonly_sql(workspace, "SELECT source FROM ingests ORDER BY ingest_id").rows]
    assert sources == ["python:pyarrow.Table", "python:pyarrow.RecordBatchReader", "python:pandas.DataFrame",
                       "python:datasets.Dataset", "python:datasets.IterableDataset", "python:records", "python:records"]
    bad = [dict(r) for r in recs[:3]] + [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant"}]}]
    with pytest.raises(InputError) as err:
        workspace.ingest(bad, pool="bad", progress=False)
    assert (err.value.file, err.value.row, err.value.field) == ("records", 3, "messages[1].content")
    with pytest.raises(InputError, match="single dict"):
        workspace.ingest(recs[0], pool="bad", progress=False)


def test_hf_folder_needs_only_pyarrow(tmp_path):
    """A save_to_disk folder is read with pyarrow alone: a fresh interpreter in which `datasets` cannot be
    imported (as if not installed) ingests one (the folder itself is written by datasets, as users have them)."""
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "hf"
    datasets.Dataset.from_list(records(20)).save_to_disk(str(folder))
    dd = tmp_path / "hfdict"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(records(20)),
                          "test": datasets.Dataset.from_list(records(5, start=100))}).save_to_disk(str(dd))
    code = ("import sys\n"
            "class NoDatasets:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'datasets':\n"
            "            raise ModuleNotFoundError(name)\n"
            "sys.meta_path.insert(0, NoDatasets())\n"
            f"import lessdb\nws = lessdb.Workspace.init({str(tmp_path / 'ws')!r})\n"
            f"r = ws.ingest({str(folder)!r}, pool='hf', progress=False)\n"
            f"d = ws.ingest({str(dd)!r}, pool='hfdict', progress=False)\n"
            "assert 'datasets' not in sys.modules\n"
            "print(r.total('n_added'), d.total('n_added'), [f.file_name for f in d.files])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split("\n")[0] == "20 25 ['data-00000-of-00001.arrow', 'data-00000-of-00001.arrow']"


# -- issue 23 items 5 and 11 ---------------------------------------------------------------------------------------
ALPACA = [{"instruction": f"do {i}", "output": f"done {i}"} for i in range(30)]


@pytest.mark.parametrize("layout", ["one-line", "indented", "jsonl", "parquet"])
def test_plan_by_record_duplicates_and_limit_are_exact(workspace, tmp_path, layout):
    def write(name, recs):
        path = tmp_path / f"{name}.{'parquet' if layout == 'parquet' else 'jsonl' if layout == 'jsonl' else 'json'}"
        if layout == "parquet":
            pq.write_table(pa.Table.from_pylist(recs), path)
        elif layout == "jsonl":
            write_jsonl(path, recs)
        else:
            path.write_text(json.dumps(recs, indent=2 if layout == "indented" else None))
        return path

    first = ingest_files(workspace, [write("first", ALPACA[:5])], pool="a", progress=False)
    assert first.total("n_added") == 5
    both = ingest_files(workspace, [write("all", ALPACA + ALPACA[10:12])], pool="a", progress=False)
    assert (both.total("n_added"), both.total("n_dup_in_pool"), both.total("n_dup_within")) == (25, 5, 2)
    rows = run_readonly_sql(workspace, "SELECT count(*), count(DISTINCT id) FROM candidates WHERE pool = 'a'").rows
    assert rows == [(30, 30)]
    limited = ingest_files(workspace, [write("all", ALPACA)], pool="b", limit=3, progress=False)
    assert limited.total("n_added") == 3 and limited.total("n_records") == 30
    got = {r["messages"][0]["content"] for r in read_candidates(workspace, pool="b").to_pylist()}
    assert got == {"do 0", "do 1", "do 2"}          # the first three, in reading order
    # the limit spans files and skips duplicates
    lim2 = ingest_files(workspace, [write("x", ALPACA[:2]), write("y", ALPACA[:4])], pool="c", limit=3,
                        progress=False)
    assert [f.n_added for f in lim2.files] == [2, 1] and lim2.files[1].n_dup_within == 2


def test_non_regular_files_are_refused_before_reading(workspace, tmp_path):
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    before = state(workspace)
    for path, words in ((fifo, "is a FIFO (named pipe), not a regular file"),
                        ("/dev/zero", "is a character device, not a regular file")):
        proc = subprocess.run([sys.executable, "-m", "lessdb.cli.main", "ingest", str(path), "--pool", "x"],
                              capture_output=True, text=True, timeout=120,
                              env=dict(os.environ, LESSDB_WORKSPACE=str(workspace.root)))
        assert proc.returncode == 2 and words in proc.stderr and str(path) in proc.stderr, proc.stderr
    (tmp_path / "link.jsonl").symlink_to(fifo)        # through a symbolic link too, and inside a glob
    for arg in (tmp_path / "link.jsonl", tmp_path / "*.jsonl"):
        with pytest.raises(InputError, match="FIFO"):
            ingest_files(workspace, [arg], pool="x", progress=False)
    assert state(workspace) == before


# -- bad columnar input -------------------------------------------------------------------------------------------
def _bad_inputs(tmp_path) -> dict:
    good = pa.Table.from_pylist(records(30))
    out = {}
    pq.write_table(good.drop_columns(["messages"]), tmp_path / "nomessages.parquet")
    out["missing column"] = (tmp_path / "nomessages.parquet", dict(row=None, field=None), "no record shape fits")
    pc_recs = [{"prompt": f"p{i}", "completion": i} for i in range(5)]
    pq.write_table(pa.Table.from_pylist(pc_recs), tmp_path / "typed.parquet")
    out["wrong type"] = (tmp_path / "typed.parquet", dict(row=0, group="row group 0", field="completion"),
                         "expected a string, got int")
    recs = records(30)
    recs[21]["messages"][1]["content"] = None
    pq.write_table(pa.Table.from_pylist(recs), tmp_path / "nulls.parquet", row_group_size=10)
    out["null inside messages"] = (tmp_path / "nulls.parquet", dict(row=21, group="row group 2",
                                                                    field="messages[1].content"), "missing")
    recs = records(30)
    recs[4]["messages"] = None
    pq.write_table(pa.Table.from_pylist(recs), tmp_path / "nullmsg.parquet")
    out["null messages"] = (tmp_path / "nullmsg.parquet", dict(row=4, field="messages"), "missing (null)")
    pq.write_table(good, tmp_path / "whole.parquet")
    data = (tmp_path / "whole.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    out["truncated parquet"] = (tmp_path / "cut.parquet", dict(row=None), "cannot be read as Parquet (truncated")
    write_arrow_file(tmp_path / "whole.feather", good, chunk=10)
    data = (tmp_path / "whole.feather").read_bytes()
    (tmp_path / "cut.feather").write_bytes(data[: len(data) - 100])
    out["truncated arrow file"] = (tmp_path / "cut.feather", dict(row=None), "truncated or damaged")
    write_arrow_file(tmp_path / "whole.arrows", good, stream=True, chunk=10)
    data = (tmp_path / "whole.arrows").read_bytes()
    (tmp_path / "cut.arrows").write_bytes(data[: len(data) // 2])
    out["truncated arrow stream"] = (tmp_path / "cut.arrows", dict(row=None), "end-of-stream marker")
    text = "".join(json.dumps({"prompt": f"p{i}", "completion": f"c{i * 7919}"}) + "\n" for i in range(2000))
    whole = gzip.compress(text.encode())
    (tmp_path / "cut.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    out["truncated gzip"] = (tmp_path / "cut.jsonl.gz", dict(row=None), "cannot be read to the end")
    out["glob matching nothing"] = (tmp_path / "nothing-*.parquet", dict(row=None), "matches no file")
    return out


def test_bad_columnar_input_names_file_row_and_column_and_writes_nothing(workspace, tmp_path):
    ingest_files(workspace, [write_jsonl(tmp_path / "ok.jsonl", records(3))], pool="p", progress=False)
    before = state(workspace)
    for what, (path, where, reason) in _bad_inputs(tmp_path).items():
        with pytest.raises(InputError, match=".") as err:
            ingest_files(workspace, [write_jsonl(tmp_path / "fine.jsonl", records(5, 50)), path], pool="p",
                         progress=False)
        assert reason in err.value.reason, (what, str(err.value))
        assert err.value.file == str(path), what
        for key, value in where.items():
            assert getattr(err.value, key) == value, (what, key, str(err.value))
        assert state(workspace) == before, what
    # the CLI: exit 2, one line naming file, row group, row and field
    path = tmp_path / "nulls.parquet"
    proc = run_cli("ingest", path, "--pool", "p", workspace=workspace.root, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{path}, row group 2, row 21, field 'messages[1].content': missing" in proc.stderr
    assert state(workspace) == before


def test_skip_invalid_records_bad_rows_by_row_and_row_group(workspace, tmp_path):
    recs = records(30)
    recs[3]["messages"][1]["content"] = "   "
    recs[25]["messages"][0]["role"] = "robot"
    pq.write_table(pa.Table.from_pylist(recs), tmp_path / "messy.parquet", row_group_size=10)
    report = ingest_files(workspace, [tmp_path / "messy.parquet"], pool="p", skip_invalid=True, progress=False)
    assert (report.total("n_added"), report.total("n_invalid")) == (28, 2)
    rows = run_readonly_sql(workspace, "SELECT file, line, row_group, row_index, field FROM ingest_skipped "
                                       "ORDER BY row_index").rows
    assert rows == [(str(tmp_path / "messy.parquet"), None, 0, 3, "messages[1]"),
                    (str(tmp_path / "messy.parquet"), None, 2, 25, "messages[0].role")]


# -- export ---------------------------------------------------------------------------------------------------------
@pytest.fixture
def toy_task(workspace, tmp_path):
    from lessdb.tasks.catalog import add_tasks

    add_tasks(workspace, "toy", file=write_jsonl(tmp_path / "task.jsonl", [
        {"subtask": "a", "prompt": "alpha beta", "completion": "gamma"}]))
    return "toy"


def test_round_trip_jsonl_parquet_hf_ingest_export_keeps_every_id(workspace, tmp_path, toy_task):
    datasets = pytest.importorskip("datasets")
    from lessdb.selection import SelectConfig, select

    recs = records(50)
    recs[7]["when"] = "spring"                # a key only some records have
    write_jsonl(tmp_path / "src.jsonl", recs)
    import pyarrow.json as pj

    pq.write_table(pj.read_json(tmp_path / "src.jsonl"), tmp_path / "src.parquet")
    datasets.Dataset.from_parquet(str(tmp_path / "src.parquet")).save_to_disk(str(tmp_path / "hf-in"))
    ingest_files(workspace, [tmp_path / "hf-in"], pool="rt", progress=False)
    sel = select(workspace, SelectConfig(task=toy_task, method="random", pool="rt", count=50, name="all",
                                         progress=False))
    ids = {m.candidate_id for m in sel.members}
    assert ids == {content_hash(r["messages"]) for r in recs}
    by_id = {content_hash(r["messages"]): r for r in recs}

    info = workspace.export("all", tmp_path / "out.jsonl")
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert {x["lessdb_id"] for x in lines} == ids and info["n_rows"] == 50
    for x in lines:
        src = by_id[x["lessdb_id"]]
        # the input's own `score` column would collide with lessdb's: it is kept as input_score
        assert (x["id"], x["messages"], x["source"], x["input_score"], x["tags"]) == \
            (src["id"], src["messages"], src["source"], src["score"], src["tags"])
        assert x.get("when") == src.get("when")
        assert x["rank"] >= 1 and "score" in x
    t = pq.read_table(workspace.export("all", tmp_path / "out.parquet")["path"])
    assert set(t.column("lessdb_id").to_pylist()) == ids
    assert {"source", "tags", "when", "rank", "score", "input_score"} <= set(t.column_names)
    hf_info = workspace.export("all", tmp_path / "out-hf", format="hf")
    loaded = datasets.load_from_disk(str(tmp_path / "out-hf"))
    assert set(loaded["lessdb_id"]) == ids and loaded.num_rows == 50 and "source" in loaded.column_names
    assert loaded[0]["messages"][0].keys() == {"role", "content"}
    with pytest.raises(InputError, match="exists"):
        workspace.export("all", tmp_path / "out-hf", format="hf")
    workspace.export("all", tmp_path / "out-hf", format="hf", force=True)      # replaces its own export
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("x")
    with pytest.raises(InputError, match="replaces only its own"):
        workspace.export("all", tmp_path / "precious", format="hf", force=True)
    assert (tmp_path / "precious" / "thesis.tex").exists()
    ds = workspace.export("all", format="datasets")
    assert isinstance(ds, datasets.Dataset) and set(ds["lessdb_id"]) == ids
    # and back in: the exported hf folder ingests to the same ids
    again = ingest_files(workspace, [tmp_path / "out-hf"], pool="rt2", progress=False)
    assert again.total("n_added") == 50 and set(pool_rows(workspace, "rt2")) == ids
    out = run_cli("export", "all", "--format", "hf", "--output", tmp_path / "cli-hf", "--json",
                  workspace=workspace.root)
    assert json.loads(out.stdout)["n_rows"] == 50 and hf_info["sha256"]


def test_older_candidates_table_gains_metadata_and_old_selections_replay(tmp_path, toy_task, workspace):
    """A workspace made before `metadata` existed: its table is upgraded at the next ingest (schema-only), older
    versions keep their schema, and a selection made before replays identically and exports."""
    import lancedb

    from lessdb import __version__
    from lessdb.ingest.pipeline import ingest_rows
    from lessdb.storage import meta_pools
    from lessdb.selection import SelectConfig, select
    from lessdb.storage.lance_tables import CANDIDATE_SCHEMA

    old_schema = pa.schema([f for f in CANDIDATE_SCHEMA if f.name != "metadata"])
    lancedb.connect(str(workspace.root / "lance")).drop_table("candidates")
    workspace.lance._db = None
    workspace.lance.ensure_table("candidates", old_schema)
    recs = records(20)
    rows = [{"key": f"old/{content_hash(r['messages'])}", "id": content_hash(r["messages"]), "pool": "old",
             "ingest_id": 0, "source_dataset": "x", "source_id": None, "messages": r["messages"], "n_turns": 2,
             "prompt_chars": 1, "completion_chars": 1, "total_chars": 2} for r in recs]
    workspace.lance.append("candidates", pa.Table.from_pylist(rows, schema=old_schema), old_schema)
    assert "metadata" not in workspace.lance.schema("candidates").names
    version = workspace.lance.version("candidates")
    meta_pools.record_ingests(workspace, "old", [{"ingest_id": 0, "source": "old", "format": "messages",
                                                  "n_records": 20, "n_added": 20, "n_invalid": 0, "n_dup_within": 0,
                                                  "n_dup_in_pool": 0, "n_dup_other_pools": 0,
                                                  "n_truncated_tail": 0}], "candidates", version, __version__, [])
    sel = select(workspace, SelectConfig(task=toy_task, method="random", pool="old", count=5, name="before",
                                         progress=False))
    pq.write_table(pa.Table.from_pylist(records(10, 100)), tmp_path / "new.parquet")
    ingest_files(workspace, [tmp_path / "new.parquet"], pool="new", progress=False)
    assert "metadata" in workspace.lance.schema("candidates").names
    assert "metadata" not in workspace.lance.dataset("candidates", version).schema.names   # old versions as they were
    got = run_readonly_sql(workspace, "SELECT pool, count(metadata) FROM candidates GROUP BY 1 ORDER BY 1").rows
    assert got == [("new", 10), ("old", 0)]
    assert select(workspace, SelectConfig(replay="before", progress=False)).identical is True
    lines = [json.loads(x) for x in open(workspace.export("before", tmp_path / "b.jsonl")["path"])]
    assert {x["lessdb_id"] for x in lines} == {m.candidate_id for m in sel.members}
    # rows built without the column (benchmarks) still append
    ingest_rows(workspace, pa.Table.from_pylist([dict(rows[0], key="gen/x", pool="gen")], schema=old_schema), "gen")
    assert run_readonly_sql(workspace, "SELECT count(*) FROM candidates WHERE pool = 'gen'").rows == [(1,)]


def test_metadata_values_become_json(workspace, tmp_path):
    """Column types JSON has no word for: timestamps and dates as ISO text, decimals as text, binary as base64,
    NaN and infinity as null; nested structs and lists as they are."""
    import decimal
    from datetime import date

    n = 3
    table = pa.table({
        "prompt": [f"p{i}" for i in range(n)], "completion": [f"c{i}" for i in range(n)],
        "when": pa.array([datetime(2024, 5, 1, 12, 30)] * n, pa.timestamp("us")),
        "day": pa.array([date(2024, 5, 1)] * n, pa.date32()),
        "price": pa.array([decimal.Decimal("1.25")] * n, pa.decimal128(5, 2)),
        "blob": pa.array([b"\x00\xffab"] * n, pa.binary()),
        "x": pa.array([float("nan"), float("inf"), 0.5]),
        "nested": pa.array([{"a": 1, "b": [1, 2]}] * n),
        "empty": pa.array([None] * n, pa.string())})
    ingest_object(workspace, table, pool="m", progress=False)
    got = sorted((json.loads(r["metadata"]) for r in pool_rows(workspace, "m").values()), key=lambda m: str(m["x"]))
    base = {"when": "2024-05-01T12:30:00", "day": "2024-05-01", "price": "1.25", "blob": "AP9hYg==",
            "nested": {"a": 1, "b": [1, 2]}, "empty": None}
    assert got == [dict(base, x=0.5), dict(base, x=None), dict(base, x=None)]


def test_format_names_a_file_format_a_shape_or_both(workspace, tmp_path):
    from lessdb.ingest.pipeline import split_formats

    assert split_formats("auto") == (None, None)
    assert split_formats(["parquet", "alpaca"]) == ("parquet", "alpaca")
    assert split_formats(["jsonl"]) == ("json", None) and split_formats("feather") == ("arrow", None)
    for bad, words in (("csv", "unknown format"), (["alpaca", "messages"], "two record shapes"),
                       (["parquet", "json"], "two file formats")):
        with pytest.raises(InputError, match=words):
            split_formats(bad)
    alpaca = [{"instruction": f"i{i}", "output": f"o{i}", "messages": "not a conversation"} for i in range(4)]
    path = tmp_path / "data.bin"
    pq.write_table(pa.Table.from_pylist(alpaca), path)
    # auto: the messages column wins, and its text is no conversation; forcing alpaca reads the other columns
    with pytest.raises(InputError, match="expected a non-empty list"):
        ingest_files(workspace, [path], pool="a", progress=False)
    report = ingest_files(workspace, [path], pool="a", fmt=["parquet", "alpaca"], progress=False)
    assert report.total("n_added") == 4 and report.files[0].format == "alpaca"
    assert {json.loads(r["metadata"])["messages"] for r in pool_rows(workspace, "a").values()} == {"not a conversation"}
    with pytest.raises(InputError, match="cannot be read as Parquet"):
        ingest_files(workspace, [write_jsonl(tmp_path / "x.jsonl", alpaca)], pool="b", fmt="parquet", progress=False)


def test_turns_stored_as_a_struct_of_lists(workspace, tmp_path):
    """datasets' Sequence-of-dict feature stores `messages` as {role: [...], content: [...]}: read as the turns."""
    recs = records(6)
    table = pa.table({"messages": pa.array([{"role": [m["role"] for m in r["messages"]],
                                             "content": [m["content"] for m in r["messages"]]} for r in recs])})
    assert pa.types.is_struct(table.schema.field("messages").type)
    ingest_object(workspace, table, pool="s", progress=False)
    assert set(pool_rows(workspace, "s")) == {content_hash(r["messages"]) for r in recs}


def test_object_store_globs_match_like_local_ones():
    from lessdb.ingest.sources import _glob_match

    assert _glob_match("b/p/x.parquet", "b/p/*.parquet")
    assert not _glob_match("b/p/q/x.parquet", "b/p/*.parquet")          # `*` stays within one segment
    assert _glob_match("b/p/q/r/x.parquet", "b/p/**/*.parquet") and _glob_match("b/p/x.parquet", "b/p/**/*.parquet")
    assert not _glob_match("b/p/x.json", "b/p/**/*.parquet")
