"""Benchmark: `lessdb ingest` of a generated pool of short conversations, from Parquet and from JSONL, with and
without MinHash signatures (`--minhash`), each into a fresh workspace by the real CLI in its own process.

Prints, per run: records, wall seconds of the ingest itself (the report's) and of the whole process (imports
included), records/s, the process's CPU seconds (user + system, all threads) and peak RSS (both from wait4),
plus the machine, the commit and the load average before and after. On a shared machine the wall figures are
the load's; CPU seconds say what the work itself cost. The target (issue 24): 1,000,000 records at >= 20,000
records/s with peak RSS <= 1.5 GB on 2 cores.

    python -m bench.ingest --rows 1000000                   # both formats, with and without MinHash
    python -m bench.ingest --rows 50000 --minhash off       # a smoke run
    python -m bench.ingest --sharegpt                       # the bundled ShareGPT V3 file instead

The generated files are kept in --workdir (default: a folder in the system temp dir) and reused by later runs
with the same --rows and --seed.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

from bench.common import LESSDB, git_commit, loadavg, machine, run_measured, write_json

WORDS = ("the of and to in is was for on that with as by at from his her an be this are which or had not but were "
         "have one all their they there been has").split() + [f"w{i}" for i in range(5000)]
TARGET_RATE = 20_000
TARGET_RSS_GB = 1.5


def generate(workdir: Path, rows: int, seed: int) -> dict[str, Path]:
    """`rows` short conversations (one user turn of 8-30 words, one assistant turn of 10-60, an id and a source
    column kept as metadata), as Parquet and as JSONL; written in chunks, reused when present."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    stem = workdir / f"pool-{rows}-{seed}"
    paths = {"parquet": stem.with_suffix(".parquet"), "jsonl": stem.with_suffix(".jsonl")}
    if all(p.exists() for p in paths.values()):
        return paths
    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    tmp = {k: p.with_suffix(p.suffix + ".tmp") for k, p in paths.items()}
    writer = None
    with open(tmp["jsonl"], "w", encoding="utf-8") as jsonl:
        for start in range(0, rows, 50_000):
            chunk = []
            for i in range(start, min(rows, start + 50_000)):
                chunk.append({"id": f"r{i}", "source": f"src{i % 7}", "messages": [
                    {"role": "user", "content": " ".join(rng.choices(WORDS, k=rng.randint(8, 30)))},
                    {"role": "assistant", "content": " ".join(rng.choices(WORDS, k=rng.randint(10, 60)))}]})
            jsonl.writelines(json.dumps(r) + "\n" for r in chunk)
            table = pa.Table.from_pylist(chunk)
            if writer is None:
                writer = pq.ParquetWriter(tmp["parquet"], table.schema)
            writer.write_table(table, row_group_size=50_000)
    writer.close()
    for k, p in paths.items():
        os.replace(tmp[k], p)
    return paths


def run_ingest(args: list[str], workdir: Path) -> dict:
    """`lessdb init` + `lessdb ingest ARGS --json` in a fresh workspace; the ingest's own process measured."""
    ws = Path(tempfile.mkdtemp(prefix="bench-ws-", dir=workdir))
    try:
        run_measured([*LESSDB, "--workspace", str(ws), "init"])
        out, wall, cpu, rss = run_measured([*LESSDB, "--workspace", str(ws), "ingest", *args, "--json"])
    finally:
        shutil.rmtree(ws, ignore_errors=True)
    report = json.loads(out)
    return {"records": report["n_records"], "added": report["n_added"], "ingest_seconds": report["seconds"],
            "process_seconds": round(wall, 2), "records_per_s": round(report["n_records"] / report["seconds"]),
            "process_cpu_seconds": round(cpu, 2), "peak_rss_gb": round(rss / 1e9, 3)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--formats", default="parquet,jsonl", help="comma-separated: parquet, jsonl")
    parser.add_argument("--minhash", choices=["both", "off", "on"], default="both")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "lessdb-bench-ingest")
    parser.add_argument("--sharegpt", action="store_true", help="ingest the bundled ShareGPT V3 file instead")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    load_before = loadavg()
    runs = []
    if args.sharegpt:
        inputs = {"sharegpt": ["--builtin", "sharegpt"]}
    else:
        paths = generate(args.workdir, args.rows, args.seed)
        inputs = {fmt: [str(paths[fmt]), "--pool", "bench"] for fmt in args.formats.split(",")}
    flags = {"off": [[]], "on": [["--minhash"]], "both": [[], ["--minhash"]]}[args.minhash]
    for _ in range(args.repeat):
        for fmt, base in inputs.items():
            for extra in flags:
                result = run_ingest(base + extra, args.workdir)
                result.update(input=fmt, minhash=bool(extra))
                runs.append(result)
                print(json.dumps(result), file=sys.stderr, flush=True)
    result = {"machine": machine(), "commit": git_commit(), "load_average_before": load_before,
              "load_average_after": loadavg(), "rows": None if args.sharegpt else args.rows, "runs": runs}
    print(json.dumps(result, indent=2))
    if args.json:
        write_json(args.json, result)
    print("\n| input | MinHash | records | ingest s | records/s | process s | process CPU s | peak RSS GB | target met |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        met = r["records_per_s"] >= TARGET_RATE and r["peak_rss_gb"] <= TARGET_RSS_GB
        print(f"| {r['input']} | {'yes' if r['minhash'] else 'no'} | {r['records']:,} | {r['ingest_seconds']:.1f} | "
              f"{r['records_per_s']:,} | {r['process_seconds']:.1f} | {r['process_cpu_seconds']:.1f} | "
              f"{r['peak_rss_gb']:.2f} | {'yes' if met else 'no'} |")


if __name__ == "__main__":
    main()
