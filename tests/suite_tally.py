"""Counts the robustness suites report (hostile inputs, corruption kinds, kill points): tests add to them and
conftest prints them at the end of the run, so one pytest run gives the figures RESULTS quotes."""
from __future__ import annotations

from collections import Counter

COUNTS: Counter = Counter()


def add(what: str, n: int = 1) -> None:
    COUNTS[what] += n


def lines() -> list[str]:
    return [f"{what}: {n:,}" for what, n in sorted(COUNTS.items())]
