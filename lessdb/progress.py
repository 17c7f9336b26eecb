"""Progress lines on stderr for long work: count, rate, tokens/s, a note (epoch, loss), ETA. The one progress
reporter of lessdb (ingest, featurize, select, eval and the trainer). `LESSDB_PROGRESS=0` silences it."""
from __future__ import annotations

import os
import sys
import time


class Progress:
    def __init__(self, label: str, total: int | None = None, unit: str = "examples", enabled: bool | None = None,
                 every_seconds: float = 1.0):
        self.label, self.total, self.unit = label, total, unit
        self.done = self.tokens = 0
        self.note: str | None = None
        self.fraction: float | None = None   # share of the work done, when only that is known (bytes read)
        self.start = time.monotonic()
        self._last = self.start
        self._printed = False
        self.every = every_seconds
        if enabled is None:
            enabled = os.environ.get("LESSDB_PROGRESS", "1") != "0"
        self.enabled = enabled

    def update(self, n: int = 1, *, tokens: int = 0, note: str | None = None, force: bool = False,
               fraction: float | None = None) -> None:
        """`n` more units done (and `tokens` more tokens, shown as tokens/s); `note` replaces the shown note;
        `force` prints now (e.g. at the end of an epoch) instead of at most every `every_seconds`; `fraction`:
        the share of the work done so far, for the ETA when the total count is unknown (e.g. bytes of a file)."""
        self.done += n
        if fraction is not None:
            self.fraction = fraction
        self.tokens += tokens
        if note is not None:
            self.note = note
        now = time.monotonic()
        if self.enabled and (force or now - self._last >= self.every):
            self._last = now
            self._printed = True
            self._print(final=False)

    def close(self) -> float:
        elapsed = time.monotonic() - self.start
        if self.enabled and (self._printed or elapsed >= self.every):  # quick work ends silently
            self._print(final=True)
        return elapsed

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.start
        return self.done / elapsed if elapsed > 0 else 0.0

    def _print(self, final: bool) -> None:
        elapsed = time.monotonic() - self.start
        rate = self.rate
        parts = [f"{self.label}: {self.done:,}" + (f"/{self.total:,}" if self.total else "") + f" {self.unit}",
                 f"{rate:,.2f} {self.unit}/s"]
        if self.tokens:
            parts.append(f"{self.tokens / max(elapsed, 1e-9):,.0f} tokens/s")
        if self.note:
            parts.append(self.note)
        parts.append(f"{elapsed:,.0f}s elapsed")
        if self.total and not final and rate > 0:
            parts.append(f"ETA {max(self.total - self.done, 0) / rate:,.0f}s")
        elif not self.total and not final and self.fraction and 0 < self.fraction < 1:
            parts.append(f"ETA {elapsed * (1 - self.fraction) / self.fraction:,.0f}s")
        end = "\n" if final or not sys.stderr.isatty() else "\r"
        sys.stderr.write(" | ".join(parts) + ("" if end == "\n" else "   ") + end)
        sys.stderr.flush()
