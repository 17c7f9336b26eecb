"""What the benchmark scripts share: where they write, the real CLI as a child process, fresh worker processes,
the machine and its load, time and peak memory, JSON output, and the data they download or look up.

Every script runs from the repository root as a module (`python -m bench.NAME`), so `bench` and this
checkout's `lessdb` import without touching sys.path.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out"            # default home of JSON results and downloads (not committed)
GIB = 2**30
LESSDB = [sys.executable, "-m", "lessdb.cli.main"]   # the real `lessdb` command of this interpreter
BIGBENCH = "bigbench==1.0.0"            # BIG-bench's task data as an sdist (358 MB)


# -- output ----------------------------------------------------------------------------------------------------
def logger(name: str) -> Callable[[str], None]:
    """A progress line on stderr, `[name HH:MM:SS] message` (stdout stays for results)."""
    def log(msg: str) -> None:
        print(f"[{name} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
    return log


def write_json(path: Path, obj: Any) -> Path:
    """`obj` as indented JSON at `path` (folders created); numpy scalars and paths are written as numbers/strings."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=_plain))
    return path


def _plain(value: Any):
    if hasattr(value, "item"):          # numpy scalar
        return value.item()
    return str(value)


# -- the machine, time, memory ---------------------------------------------------------------------------------
def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages: the machine is shared, and every timing is read against them."""
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict:
    """CPU model, cores, memory and Python: what a reader needs to compare figures across machines."""
    cpu = platform.processor()
    mem = 0
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)
        mem = next(int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:"))
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem / GIB, 1), "python": platform.python_version()}


def git_commit() -> str:
    """`git describe --always --dirty` of this checkout: which code a figure was measured on."""
    try:
        out = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                             text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far, GiB (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all threads): on a loaded machine a steadier measure than wall."""
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


# -- child processes -------------------------------------------------------------------------------------------
def lessdb(ws: Path, *args: str, json_out: bool = True, log: Callable[[str], None] | None = None):
    """Run the real CLI on workspace `ws`; with `json_out`, parse its `--json` output. Exits on failure."""
    cmd = [*LESSDB, *args, "--workspace", str(ws)] + (["--json"] if json_out else [])
    if log:
        log("$ lessdb " + " ".join(args))
    t = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"lessdb {' '.join(args)} failed with exit {proc.returncode}")
    if log:
        log(f"  done in {time.perf_counter() - t:.0f}s")
    return json.loads(proc.stdout) if json_out else proc.stdout


def run_measured(cmd: list[str], env: dict | None = None) -> tuple[str, float, float, int]:
    """Run `cmd` (cwd=REPO) and measure that one child: (its stdout, wall seconds, CPU seconds of user + system
    over all its threads, peak RSS in bytes), the last two from wait4 (RUSAGE_CHILDREN would mix in earlier
    children). stderr passes through (progress). Exits on failure."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO, env=env)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed with exit {proc.returncode}")
    return out, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024


def bench_command(module: str, *args: str, python_flags: tuple[str, ...] = ()) -> list[str]:
    """The command line that runs bench/<module>.py as `python -m bench.<module>` (run it with cwd=REPO)."""
    return [sys.executable, *python_flags, "-m", f"bench.{module}", *map(str, args)]


def confine_to_loopback(module: str) -> None:
    """Re-run `python -m bench.<module>` (this process's arguments) in a private network namespace where only `lo`
    exists, unless already in one: Ray and the S3 emulator then cannot reach, or be reached from, another address."""
    with open("/proc/net/dev") as fh:
        interfaces = sorted(line.split(":")[0].strip() for line in fh.readlines()[2:])
    if interfaces == ["lo"]:
        return
    if shutil.which("unshare") is None:
        sys.exit(f"bench.{module} needs `unshare` (util-linux) to keep Ray and the S3 emulator on loopback")
    cmd = f"ip link set lo up && exec {shlex.join(bench_command(module, *sys.argv[1:]))}"
    sys.exit(subprocess.call(["unshare", "-n", "sh", "-c", cmd], cwd=REPO))


def run_worker(module: str, *args: str, env: dict | None = None) -> dict:
    """Run one measurement of bench/<module>.py in a fresh process (its own imports, caches and peak RSS) and
    return the JSON object on the last line of its stdout. Raises RuntimeError with the end of its stderr."""
    proc = subprocess.run(bench_command(module, *args), capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, LESSDB_PROGRESS="0", **(env or {})))
    if proc.returncode != 0:
        raise RuntimeError(f"python -m bench.{module} {' '.join(map(str, args))} failed "
                           f"({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- data ------------------------------------------------------------------------------------------------------
def less_eval_dir() -> Path:
    """LESS's `data/eval` folder: $LESS_EVAL_DIR, else ../shared/data/less-eval beside the repository."""
    return Path(os.environ.get("LESS_EVAL_DIR") or REPO.parent / "shared" / "data" / "less-eval")


def bigbench_sdist(given: Path | None, cache: Path, log: Callable[[str], None]) -> Path:
    """The `bigbench` 1.0.0 sdist: `given`, else the one in `cache`, else downloaded there once with pip."""
    if given:
        if not Path(given).is_file():
            raise SystemExit(f"--bigbench-sdist {given}: no such file")
        return Path(given)
    found = sorted(cache.glob("bigbench-1.0.0.tar.gz"))
    if not found:
        cache.mkdir(parents=True, exist_ok=True)
        log(f"no {BIGBENCH} sdist in {cache}: asking the package registry for it (358 MB, once)")
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                               BIGBENCH, "-d", str(cache)], capture_output=True, text=True)
        found = sorted(cache.glob("bigbench-1.0.0.tar.gz"))
        if proc.returncode != 0 or not found:
            raise SystemExit(f"the {BIGBENCH} sdist (BIG-bench's task data) is not on the package registry (only "
                             "bigbench 0.0.1, without task data): pass --bigbench-sdist FILE, a bigbench-1.0.0.tar.gz "
                             "you have (or --smoke for the synthetic stand-in)")
    return found[-1]
