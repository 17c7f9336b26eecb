"""`lessdb quickstart` end to end in a fresh workspace: wall time, per-phase times and peak memory (issue 17).

    python -m bench.quickstart [--workspace DIR] [--keep] [--json bench/out/quickstart.json] [-- QUICKSTART-ARGS]

(anything after `--` goes to `lessdb quickstart`, e.g. `-- --model tiny --pool-size 20` for a smoke run.)

Runs `python -m lessdb.cli.main quickstart --workspace <fresh dir> --json` as a child process (this checkout's
code and this interpreter's packages, the README's defaults: nothing is scaled down further) and records
- wall: the child's whole run, process start and imports included;
- peak RSS of the whole child: sampled independently from /proc/<pid>/status (VmRSS, every 50 ms) by this script;
- per phase (ingest, convert = GGUF -> safetensors, warmup, featurize, select): time and peak RSS as the
  quickstart itself measured them (lessdb.phase_meter: the kernel's VmHWM, reset at each phase start);
- the machine (CPU model, cores, memory), the date, the commit, and the load average before and after: the
  machine is shared, and a loaded machine's times say little about an idle one.
Prints a table and writes everything as JSON. The README's figures come from this script.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.common import LESSDB, OUT, REPO, git_commit, loadavg, machine, write_json
from lessdb.phase_meter import GB, format_phases   # light: no torch, no storage


class RssSampler(threading.Thread):
    """Largest VmRSS of one process, sampled from outside it."""

    def __init__(self, pid: int, every: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.every, self.peak = pid, every, 0
        self.done = threading.Event()

    def run(self) -> None:
        status = Path(f"/proc/{self.pid}/status")
        while not self.done.is_set():
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.peak = max(self.peak, int(line.split()[1]) * 1024)
                        break
            except (OSError, ValueError):
                pass
            time.sleep(self.every)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", type=Path, help="fresh workspace directory (default: a temp dir, removed after)")
    ap.add_argument("--keep", action="store_true", help="keep the temp workspace")
    ap.add_argument("--json", type=Path, default=OUT / "quickstart.json")
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)

    ws = args.workspace or Path(tempfile.mkdtemp(prefix="lessdb-quickstart-bench-"))
    if ws.exists() and any(ws.iterdir()):
        print(f"{ws} is not empty: the benchmark needs a fresh workspace", file=sys.stderr)
        return 2
    record = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
              "commit": git_commit(), "load_before": loadavg(),
              "command": " ".join([Path(sys.executable).name, "-m lessdb.cli.main quickstart --workspace", str(ws),
                                   "--json", *extra])}
    print(f"quickstart benchmark: {record['date']}, {record['machine']}, commit {record['commit']}, "
          f"load average before {record['load_before']}", flush=True)
    t0 = time.monotonic()
    child = subprocess.Popen([*LESSDB, "quickstart", "--workspace", str(ws), "--json", *extra],
                             cwd=REPO, stdout=subprocess.PIPE, text=True)
    sampler = RssSampler(child.pid)
    sampler.start()
    out, _ = child.communicate()   # the child's progress lines go straight to our stderr
    record["wall_s"] = round(time.monotonic() - t0, 1)
    sampler.done.set()
    sampler.join()
    record["load_after"] = loadavg()
    record["returncode"] = child.returncode
    record["peak_rss_sampled_bytes"] = sampler.peak
    if child.returncode != 0:
        print(f"lessdb quickstart failed (exit {child.returncode})", file=sys.stderr)
    else:
        result = json.loads(out)
        record["measured"] = result["measured"]   # the quickstart's own phase table (PhaseMeter.summary())
        record["selections"] = result["selections"]
    write_json(args.json, record)
    if not args.workspace and not args.keep:
        shutil.rmtree(ws, ignore_errors=True)

    if "measured" in record:
        print("\n" + format_phases(record["measured"]))
    print(f"{'wall':<12}{record['wall_s']:>8.0f}s{record['peak_rss_sampled_bytes'] / GB:>8.2f} GB"
          f"   (wall: whole process; its peak RSS sampled from outside)")
    print(f"load average before {record['load_before']}, after {record['load_after']}; machine {record['machine']}")
    print(f"JSON: {args.json}")
    return child.returncode


if __name__ == "__main__":
    sys.exit(main())
