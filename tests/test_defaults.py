"""One home per default (issue 21 item 4): a run's token window is read by one function, whatever form its record
took; the select knobs' defaults are SelectConfig's; range checks are declared on the setting and checked for
every config the same way."""
from __future__ import annotations

import dataclasses
import inspect
import json
import math
from dataclasses import dataclass

import numpy as np
import pytest

from lessdb.evaluate.config import EvalConfig
from lessdb.featurize.config import FeaturizeConfig
from lessdb.runs.config import build_train_config, build_warmup_config, run_max_seq_length
from lessdb.scale.options import RayOptions
from lessdb.selection import replay
from lessdb.selection.config import RunOptions, SelectConfig
from lessdb.settings import DEFAULT_MAX_SEQ_LENGTH, SettingError, check_ranges, raise_problems, setting

from conftest import run_cli


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



# -- range checks declared on the setting, checked by one function --------------------------------------------------
@dataclass
class Knobs:
    count: int = setting(1, "at least one", min=1)
    share: float = setting(0.5, "a fraction above 0", above=0, max=1)
    rate: float = setting(0.1, "from 0, below 1", min=0, below=1)
    scale: float = setting(1.0, "any finite number", finite=True)
    cap: int | None = setting(None, "optional, at most 10", max=10)

    def validate(self):
        problems = []
        check_ranges(self, problems)
        raise_problems(self, problems)


@pytest.mark.parametrize("field, value, message", [
    ("count", 0, "count 0: must be at least 1"),
    ("share", 0.0, "share 0.0: must be in (0, 1]"),
    ("share", 1.5, "share 1.5: must be in (0, 1]"),
    ("share", math.nan, "share nan: must be a finite number"),
    ("rate", 1.0, "rate 1.0: must be in [0, 1)"),
    ("scale", math.inf, "scale inf: must be a finite number"),
    ("cap", 11, "cap 11: must be at most 10"),
    ("count", True, "count True: must be a number"),
    ("count", "3", "count '3': must be a number"),
])
def test_a_declared_range_is_checked_generically(field, value, message):
    Knobs().validate()                          # the defaults are in range
    Knobs(share=1, rate=0, scale=-1e300).validate()   # the bounds themselves: inclusive or not as declared
    with pytest.raises(SettingError) as info:
        Knobs(**{field: value}).validate()
    assert str(info.value) == message and info.value.fields == [field]


# every range that a validate() body used to spell out, now declared: (how to build it, field, a value just outside)
DECLARED = [
    (lambda **kw: build_warmup_config("p", **kw).validate(), "lora_r", 0, "r 0: must be at least 1"),
    (lambda **kw: build_warmup_config("p", **kw), "lora_alpha", 0, "alpha 0: must be greater than 0"),
    (lambda **kw: build_warmup_config("p", **kw), "lora_dropout", 1.0, "dropout 1.0: must be in [0, 1)"),
    (lambda **kw: build_warmup_config("p", **kw), "lr", 0.0, "lr 0.0: must be greater than 0"),
    (lambda **kw: build_warmup_config("p", **kw), "lr", math.inf, "lr inf: must be a finite number"),
    (lambda **kw: build_warmup_config("p", **kw), "epochs", 0, "epochs 0: must be at least 1"),
    (lambda **kw: build_warmup_config("p", **kw), "batch_size", 0, "batch_size 0: must be at least 1"),
    (lambda **kw: build_warmup_config("p", **kw), "micro_batch_size", 0, "micro_batch_size 0: must be at least 1"),
    (lambda **kw: build_warmup_config("p", **kw), "warmup_ratio", 1.0, "warmup_ratio 1.0: must be in [0, 1)"),
    (lambda **kw: build_warmup_config("p", **kw), "max_seq_length", 7, "max_seq_length 7: must be at least 8"),
    (lambda **kw: build_warmup_config("p", **kw), "percentage", 5.0, "percentage 5.0: must be in (0, 1]"),
    (lambda **kw: build_warmup_config("p", **kw), "max_examples", 0, "max_examples 0: must be at least 1"),
    (lambda **kw: build_train_config("full", **kw), "epochs", 0, "epochs 0: must be at least 1"),
    (lambda **kw: FeaturizeConfig(run_id="r", **kw).validate(), "dim", 0, "dim 0: must be at least 1"),
    (lambda **kw: FeaturizeConfig(run_id="r", **kw).validate(), "batch_size", 0, "batch_size 0: must be at least 1"),
    (lambda **kw: FeaturizeConfig(run_id="r", **kw).validate(), "max_seq_length", 1,
     "max_seq_length 1: must be at least 2"),
    (lambda **kw: SelectConfig(task="bbh", **kw).validate(), "count", 0, "count 0: must be at least 1"),
    (lambda **kw: SelectConfig(task="bbh", **kw).validate(), "percentage", 5.0, "percentage 5.0: must be in (0, 1]"),
    (lambda **kw: SelectConfig(task="bbh", **kw).validate(), "max_tokens", 0, "max_tokens 0: must be at least 1"),
    (lambda **kw: SelectConfig(task="bbh", **kw).validate(), "dedup", 1.5, "dedup 1.5: must be in (0, 1]"),
    (lambda **kw: SelectConfig(task="bbh", **kw).validate(), "val_max_seq_length", 1,
     "val_max_seq_length 1: must be at least 2"),
    (lambda **kw: EvalConfig(task="bbh", model="tiny", **kw).validate(), "batch_size", 0,
     "batch_size 0: must be at least 1"),
    (lambda **kw: EvalConfig(task="bbh", model="tiny", **kw).validate(), "limit", 0, "limit 0: must be at least 1"),
    (lambda **kw: RayOptions(**kw).validate(), "workers", 0, "workers 0: must be at least 1"),
    (lambda **kw: RayOptions(**kw).validate(), "gpus_per_worker", -1.0, "gpus_per_worker -1.0: must be at least 0"),
]


@pytest.mark.parametrize("build, key, value, message", DECLARED, ids=[f"{d[1]}={d[2]}" for d in DECLARED])
def test_every_config_checks_its_declared_ranges(build, key, value, message):
    with pytest.raises(SettingError) as info:
        build(**{key: value})
    assert message in str(info.value)


def test_the_cli_shows_a_range_error_with_its_flag(tmp_path):
    run_cli("init", workspace=tmp_path / "ws")
    proc = run_cli("warmup", "--pool", "p", "--lr", "nan", workspace=tmp_path / "ws", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "Error: --lr nan: must be a finite number" in proc.stderr, proc.stderr


# -- the select knobs that say how a selection runs have SelectConfig's defaults, wherever they are taken --------
def test_run_options_and_replay_take_select_configs_defaults():
    defaults = SelectConfig(task="bbh")
    options = RunOptions()
    assert dataclasses.asdict(options) == {f.name: getattr(defaults, f.name) for f in dataclasses.fields(RunOptions)}
    assert RunOptions.of(SelectConfig(task="bbh", batch_rows=512, device="cuda")) == RunOptions(batch_rows=512,
                                                                                              device="cuda")
    params = inspect.signature(replay).parameters
    for f in dataclasses.fields(RunOptions):
        assert params[f.name].default == getattr(defaults, f.name), f.name
