"""Featurization benchmark (issue 4), both halves in one run as before: speed (bench/featurize_speed.py: (a)
forward+backward only, (b) lessdb's default path, (c) the reference approach) then fidelity
(bench/featurize_fidelity.py: Spearman of exact vs sketched LESS scores), sharing one model load.

    python -m bench.featurize [--workspace /tmp/lessdb-bench-ws] [--n-speed 32] [--n-fidelity 64] [--quick]
                              [--skip-fidelity]
    python -m bench.featurize --fidelity-only ...   (= python -m bench.featurize_fidelity --replicates ...)

Timings depend on the machine's load (2 shared vCPUs): the load average is printed at start and end.
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from bench import featurize_fidelity, featurize_speed
from bench.featurize_common import add_common_arguments, log, setup
from lessdb.models.tokenization import pad_token_id


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(ap)
    featurize_speed.add_arguments(ap)
    featurize_fidelity.add_arguments(ap)
    ap.add_argument("--skip-fidelity", action="store_true")
    args = ap.parse_args()
    if args.fidelity_only:
        return featurize_fidelity.run_replicates(args)
    torch.set_num_threads(args.threads or torch.get_num_threads())
    args.n_fidelity = args.n_fidelity or 64
    if args.quick:
        args.n_speed, args.n_fidelity = 16, 24
    log(f"load average at start: {os.getloadavg()}; torch threads {torch.get_num_threads()}")
    t0 = time.perf_counter()
    ws, loaded, model, examples, state, params = setup(args, max(args.n_speed, args.n_fidelity))
    pad = pad_token_id(loaded.tokenizer)
    featurize_speed.run_speed(args, ws, model, examples, state, params, pad)
    if not args.skip_fidelity:
        featurize_fidelity.basic_fidelity(args, ws, loaded.tokenizer, model, examples, state, params, pad)
    log(f"load average at end: {os.getloadavg()}; total {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
