"""Per-phase wall time and peak RSS (lessdb.phase_meter), and the quickstart reporting them (tiny model)."""
from __future__ import annotations

import gc

import numpy as np
import pytest

from lessdb.phase_meter import PhaseMeter, current_rss, format_phases

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_phase_peaks_see_a_transient_allocation():
    meter = PhaseMeter()
    try:
        with meter.phase("big"):
            buf = np.ones(300 * 2**20 // 8)   # 300 MB touched, then freed inside the phase
            del buf
        with meter.phase("small"):
            sum(range(1000))
    finally:
        meter.close()
    s = meter.summary()
    big, small = s["phases"]["big"]["peak_rss_bytes"], s["phases"]["small"]["peak_rss_bytes"]
    assert big >= current_rss() + 250 * 2**20   # the 300 MB is counted although it was gone at the phase's end
    if s["memory_method"].startswith("VmHWM"):  # reset per phase: the later phase does not inherit the peak
        assert small < big - 250 * 2**20
    assert s["peak_rss_bytes"] == big
    table = format_phases(s)
    assert "big" in table and "small" in table and "total" in table


def test_quickstart_reports_phases_and_peak_memory(tmp_path):
    from lessdb import Workspace

    result = Workspace.quickstart(tmp_path / "ws", pool_size=12, model="tiny", dim=64, percentage=0.25,
                                  warmup_percentage=0.5, val_max_seq_length=64, device="cpu")
    phases = result["measured"]["phases"]
    assert list(phases) == ["ingest", "convert", "warmup", "featurize", "select"]
    assert all(p["seconds"] >= 0 and p["peak_rss_bytes"] > 50 * 2**20 for p in phases.values())
    assert result["measured"]["peak_rss_bytes"] == max(p["peak_rss_bytes"] for p in phases.values())
    assert result["timings"]["featurize_s"] == phases["featurize"]["seconds"]
    assert result["less"] and set(result["selections"]) == {"less", "random", "bm25"}


def test_release_freed_memory_returns_a_freed_heap_to_the_os():
    from lessdb.phase_meter import release_freed_memory

    release_freed_memory()
    before = current_rss()
    chunks = [bytearray(64 * 1024) for _ in range(3000)]   # ~190 MB of small heap blocks, then freed
    pinned = [bytearray(64 * 1024) for _ in range(20)]      # allocated above them: free() alone cannot trim
    del chunks
    gc.collect()
    if current_rss() < before + 100 * 2**20:
        pytest.skip("this allocator returned the memory by itself")
    release_freed_memory()
    assert current_rss() < before + 100 * 2**20
    del pinned
