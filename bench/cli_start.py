"""Start-up time of the light commands: `lessdb --help`, `tasks`, `pools`, `selections`, `show`, `sql`.

Each command runs in a fresh process (best of --repeats wall-clock seconds, plus that run's user+sys CPU
seconds, which a loaded machine inflates less), on a real workspace with real selections (the tiny pipeline
of tests/report_workspace.py, built once into --workdir). Then one `python -X importtime` run per command
lists the slowest imports (cumulative), and whether torch / lancedb / transformers / peft were imported.
Targets (issue 13): `--help` < 0.5 s, the others < 1.5 s on an idle 2-core machine.

    python -m bench.cli_start --repeats 5
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench.common import LESSDB, REPO, loadavg

HEAVY = ("torch", "lancedb", "transformers", "peft")
COMMANDS = [("--help",), ("tasks",), ("pools",), ("selections",), ("show", "arith-less"),
            ("sql", "SELECT pool, count(*) FROM candidates GROUP BY pool")]


def ensure_workspace(workdir: Path) -> Path:
    """The tests' demo workspace (ingest -> warmup -> featurize -> select, tiny model), built by running
    tests/report_workspace.py's build() in a child process started in tests/ (where it imports from)."""
    root = workdir / "ws"
    if (root / "lessdb.duckdb").exists():
        return root
    workdir.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from report_workspace import build; "
                    "build(Path(sys.argv[1]))", str(root.resolve())], cwd=REPO / "tests", check=True)
    return root


def _cmd(root: Path, args: tuple[str, ...], python_flags: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, *python_flags, *LESSDB[1:], "--workspace", str(root), *args]


def time_once(root: Path, args: tuple[str, ...]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(_cmd(root, args), check=True, capture_output=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def import_profile(root: Path, args: tuple[str, ...], top: int) -> tuple[list[tuple[float, str]], list[str]]:
    proc = subprocess.run(_cmd(root, args, ("-X", "importtime")), check=True, capture_output=True, text=True)
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        _, cumulative, name = line.split(":", 1)[1].split("|")
        rows.append((int(cumulative) / 1e6, name.rstrip()))
    loaded = sorted({name.strip() for _, name in rows if name.strip() in HEAVY})
    return sorted(rows, reverse=True)[:top], loaded


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/lessdb-bench-cli"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--top", type=int, default=8, help="slowest imports listed per command")
    args = ap.parse_args()
    root = ensure_workspace(args.workdir)
    env_note = "load average " + " ".join(f"{x:.2f}" for x in loadavg())
    results = []
    for command in COMMANDS:
        time_once(root, command)   # warm the page cache
        runs = [time_once(root, command) for _ in range(args.repeats)]
        wall, cpu = min(runs)
        target = 0.5 if command == ("--help",) else 1.5
        profile, heavy = import_profile(root, command, args.top)
        results.append((command, wall, cpu, target, heavy))
        print(f"\nlessdb {command[0]}: best {wall:.2f} s wall, {cpu:.2f} s CPU (target {target} s idle); "
              f"heavy imports: {', '.join(heavy) or 'none'}")
        for seconds, name in profile:
            print(f"  {seconds:6.3f} s  {name}")
    print(f"\n{env_note} at the end (the machine has {os.cpu_count()} cores)\n")
    print("| command | best wall s | its CPU s | target (idle) | torch/lancedb/transformers/peft |")
    print("|---|---|---|---|---|")
    for command, wall, cpu, target, heavy in results:
        print(f"| `lessdb {command[0]}` | {wall:.2f} | {cpu:.2f} | < {target} | {', '.join(heavy) or 'none'} |")


if __name__ == "__main__":
    main()
