"""Wall time and peak memory (RSS) of each phase of a long command, so a user can tell where their machine spends
both (`lessdb quickstart` prints them at the end and puts them in its --json output).

Peak RSS per phase: on Linux the kernel's high-water mark (VmHWM) can be reset to the current RSS by writing "5"
to /proc/self/clear_refs; each phase starts with a reset and ends by reading VmHWM — exact, no sampling. Where
that is not allowed (other systems, some containers), a background thread samples the RSS every 50 ms and the
figure is the largest sample (may miss a short spike). The whole run's peak is the largest phase peak.
"""
from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

GB = 10**9   # decimal, as memory targets and laptop specs are stated
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def current_rss() -> int:
    """Bytes resident now (0 where /proc is not available)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _hwm() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def release_freed_memory() -> None:
    """Collect Python garbage and hand freed heap pages back to the OS (glibc's malloc_trim; elsewhere only the
    collection). Between phases: glibc keeps large freed blocks (a finished phase's activations, the trainer's
    optimizer state) in the process, and the next phase's peak would stack on top of them."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PhaseMeter:
    def __init__(self, sample_every: float = 0.05):
        self.phases: dict[str, dict] = {}
        self._every = sample_every
        self._max_sample = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.method = "VmHWM reset per phase" if _reset_hwm() and _hwm() is not None else "sampled every 50 ms"
        if self.method.startswith("sampled"):
            self._thread = threading.Thread(target=self._sample, name="lessdb-rss-sampler", daemon=True)
            self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self._every):
            self._max_sample = max(self._max_sample, current_rss())

    @contextmanager
    def phase(self, name: str):
        """Time the block and record its peak RSS under `name` (also when the block raises)."""
        if self.method.startswith("VmHWM"):
            _reset_hwm()
        start = self._max_sample = current_rss()
        t0 = time.monotonic()
        try:
            yield
        finally:
            seconds = time.monotonic() - t0
            peak = _hwm() if self.method.startswith("VmHWM") else max(self._max_sample, current_rss())
            # what the phase inherited (imports, earlier phases' leftovers) is part of its peak: shown apart
            self.phases[name] = {"seconds": round(seconds, 1), "peak_rss_bytes": int(peak or 0),
                                 "start_rss_bytes": int(start)}

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)

    def summary(self) -> dict:
        total = sum(p["seconds"] for p in self.phases.values())
        peak = max((p["peak_rss_bytes"] for p in self.phases.values()), default=0)
        return {"phases": self.phases, "total_seconds": round(total, 1), "peak_rss_bytes": peak,
                "memory_method": self.method}


def format_phases(summary: dict) -> str:
    """A small table: phase, seconds, peak RSS, RSS when the phase started."""
    lines = [f"{'phase':<12}{'time':>9}{'peak RSS':>11}{'at start':>11}"]
    for name, p in summary["phases"].items():
        lines.append(f"{name:<12}{p['seconds']:>8.0f}s{p['peak_rss_bytes'] / GB:>8.2f} GB"
                     f"{p.get('start_rss_bytes', 0) / GB:>8.2f} GB")
    lines.append(f"{'total':<12}{summary['total_seconds']:>8.0f}s{summary['peak_rss_bytes'] / GB:>8.2f} GB"
                 f"   (GB = 10^9 bytes; peak RSS: {summary['memory_method']})")
    return "\n".join(lines)
