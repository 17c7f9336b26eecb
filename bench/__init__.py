"""lessdb's benchmarks: scripts that print figures (speed, memory, selection quality), never test assertions.

Run each from the repository root as a module, e.g. `python -m bench.ingest`; what they share is in
bench/common.py (processes, timing and memory, JSON, the CLI, data downloads) and bench/synthetic_store.py
(the synthetic feature store of the select benchmarks). Current figures: bench/RESULTS.md; earlier rounds:
bench/history/.
"""
