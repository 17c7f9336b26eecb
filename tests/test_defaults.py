"""One home per default (issue 21 item 4): a run's token window is read by one function, whatever form its record
took; the select knobs' defaults are SelectConfig's; range checks are declared on the setting and checked for
every config the same way."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lessdb.runs.config import run_max_seq_length
from lessdb.settings import DEFAULT_MAX_SEQ_LENGTH


def _stored(config: dict) -> dict:
    """A run row as the catalogue returns it: its config went through json.dumps(default=str) and json.loads."""
    return {"config": json.loads(json.dumps(config, default=str))}


@pytest.mark.parametrize("config, window", [
    ({"warmup": {"training": {"max_seq_length": 256}}}, 256),          # a warmup run
    ({"training": {"max_seq_length": 96}}, 96),                         # a train run
    ({"max_seq_length": 512}, 512),                                     # an older record
    # where featurize (int(...)) and select (isinstance int) used to disagree: select fell back to 2048
    ({"warmup": {"training": {"max_seq_length": 256.0}}}, 256),
    ({"warmup": {"training": {"max_seq_length": np.int64(128)}}}, 128),  # stored as the string "128"
    # no window: the next place is tried, and the paper's default last
    ({"warmup": {"training": {"max_seq_length": True}}, "training": {"max_seq_length": 64}}, 64),
    ({"warmup": {"training": {"max_seq_length": 256.5}}}, DEFAULT_MAX_SEQ_LENGTH),
    ({"warmup": {"training": {"max_seq_length": 0}}}, DEFAULT_MAX_SEQ_LENGTH),
    ({"warmup": None, "training": "x"}, DEFAULT_MAX_SEQ_LENGTH),
    ({}, DEFAULT_MAX_SEQ_LENGTH),
])
def test_a_runs_window_reads_the_same_for_every_stage(config, window):
    assert run_max_seq_length(_stored(config)) == window
    assert run_max_seq_length({"config": None}) == DEFAULT_MAX_SEQ_LENGTH

