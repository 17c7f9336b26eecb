"""Names users give to things lessdb keeps: run ids (each becomes a folder, `checkpoints/<run id>/`) and
selection names. One rule for all of them, checked before anything is read or written:

    1 to 128 characters: letters, digits, '.', '_', '-', '+', '@'; the first a letter or a digit.

So a name is never a path of its own (no '/', no '..', not absolute, no leading '-' that reads as a flag or
'.' that hides a folder), never empty, never longer than a file name may be, and never `full`/`random:P`-like
(':' is not allowed; `lessdb train --selection` reads those as the built-in baselines). `inside(base, name)` is
the second line of defence where a name is joined to a folder.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import LessdbError, ref

MAX_NAME = 128
EXTRA = "._-+@"


def name_problem(value) -> str | None:
    """What is wrong with `value` as a name, or None."""
    if not isinstance(value, str) or not value:
        return "is empty; give a name"
    if len(value) > MAX_NAME:
        return f"is {len(value)} characters long; at most {MAX_NAME}"
    bad = sorted({ch for ch in value if not (ch.isalnum() or ch in EXTRA)})
    if bad:
        return (f"{value!r} contains {', '.join(repr(ch) for ch in bad[:5])}; use letters, digits, "
                f"{', '.join(repr(c) for c in EXTRA)}")
    if not value[0].isalnum():
        return f"{value!r} starts with {value[0]!r}; start with a letter or a digit"
    return None


def check_names(config, problems: list, *fields: str) -> None:
    """In a config's `validate()`: a problem for each of `fields` that is given (not None) and breaks the rule."""
    for field in fields:
        value = getattr(config, field)
        problem = None if value is None else name_problem(value)
        if problem:
            problems.append((field, problem))


def check_name(value, field: str, config_cls=None) -> None:
    """Raise a SettingError naming `field` (a field of `config_cls`, shown as its flag by the CLI) if `value`
    breaks the rule."""
    from .settings import SettingError

    problem = name_problem(value)
    if problem is not None:
        raise SettingError(config_cls, [(field, problem)])


def inside(base: Path, name: str) -> Path:
    """`base / name`, refused unless it is a direct child of `base` (after resolving symbolic links)."""
    base = Path(base)
    path = base / name
    if os.path.realpath(path.parent) != os.path.realpath(base) or name in ("", ".", ".."):
        raise LessdbError(f"{name!r} would be a path outside {base}; a name must be one plain folder name "
                          f"({ref('run_id')})")
    return path
