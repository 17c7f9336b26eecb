"""The ranges every setting keeps whatever its own checks say (issue 23): a float is a finite number (`--lr nan`
would reach torch after the run was recorded, `--percentage inf` the sampler), an integer fits the 64-bit columns
and arrays it ends up in, and a seed is a non-negative 64-bit integer (numpy refuses negative seeds; DuckDB's BIGINT
column refuses 2**63 after the work is done).

One function per question, used by both doors: `check_ranges` by every config's validation (`settings.
raise_problems`), `click_type` by the flags `cli/options.py` generates, so `--seed 2**63` is refused while the
command line is parsed. Settings with declared bounds (issue 21's `setting(..., min=...)`) add theirs on top.
"""
from __future__ import annotations

import dataclasses
import math

INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1


def is_seed(name: str) -> bool:
    return name == "seed" or name.endswith("_seed")


def int_bounds(name: str) -> tuple[int, int]:
    return (0, INT64_MAX) if is_seed(name) else (INT64_MIN, INT64_MAX)


def value_problem(name: str, value) -> str | None:
    """What is wrong with `value` for a setting called `name` (None: nothing this module checks)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value}: must be a finite number"
    if isinstance(value, int):
        lo, hi = int_bounds(name)
        if not lo <= value <= hi:
            return (f"{value}: must be between 0 and 2**63 - 1" if is_seed(name) else
                    f"{value}: out of range (a 64-bit integer: at most 2**63 - 1 in size)")
    return None


def check_ranges(obj, problems: list) -> None:
    """Append a problem for every scalar field of the dataclass `obj` outside its range."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            problem = value_problem(f.name, v)
            if problem:
                problems.append((f.name, problem))
                break


def count_type(minimum: int):
    """The click type of a hand-written count flag (--top, --limit, --examples): from `minimum` to 2**63 - 1."""
    import click

    return click.IntRange(minimum, INT64_MAX)


def click_type(name: str, base: type):
    """The click parameter type of an int or float flag, refusing out-of-range values while parsing."""
    import click

    class _Int(click.types.IntParamType):
        def convert(self, value, param, ctx):
            out = super().convert(value, param, ctx)
            problem = value_problem(name, out)
            if problem:
                self.fail(problem, param, ctx)
            return out

    class _Float(click.types.FloatParamType):
        def convert(self, value, param, ctx):
            out = super().convert(value, param, ctx)
            if not math.isfinite(out):
                self.fail(f"{value!r}: must be a finite number", param, ctx)
            return out

    return _Int() if base is int else _Float()
