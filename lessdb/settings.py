"""Settings declared once: a config dataclass field carries its default, its help and (when it is a command-line
option) its flag, so the CLI's options, their shown defaults, the presets' help and the error messages all come
from the field (`cli/options.py` builds the click options; kronfluence's `arguments.py` does the same).

    dim: int = setting(8192, "Sketch dimension d.")
    grad_kind: str = setting("adam", "adam: LESS's Adam direction; ...", flag="--grad", choices=GRAD_KINDS)

Library code names fields, never flags: `SettingError` carries the field names of what is wrong, and the CLI
shows them as its flags (`cli/options.py`), so a Python user reads `grad_kind`, a shell user `--grad`. A field
named inside a sentence is written `ref("pool")`:

    raise SettingError(TrainConfig, f"{ref('selection')} {spec} needs {ref('pool')}")
"""
from __future__ import annotations

import dataclasses
import inspect
import math
import re
import textwrap
import weakref
from dataclasses import MISSING, field

from .errors import _REF_PATTERN, LessdbError, ref, render_refs  # noqa: F401 (ref: re-exported)

# the one fallback for a token window nothing recorded (an old run, a base model): the paper's
DEFAULT_MAX_SEQ_LENGTH = 2048


def setting(default=MISSING, help: str = "", *, default_factory=MISSING, flag: str | None = None,
            choices=None, cli: bool = True, show: str | None = None, short: str | None = None,
            multiple: bool = False, metavar: str | None = None, min=None, max=None, above=None, below=None,
            finite: bool = False):
    """A dataclass field with its help. `flag`: the option's name when it is not the field's name with dashes; `choices`: the
    allowed values (validated, and a click.Choice); `cli=False`: no command-line option (library-only knob);
    `show`: the default as help shows it, when the value itself does not say it (None means "computed");
    `short`: a one-letter alias of the flag (`-p`); `multiple`: the flag may be repeated (the command gets a
    tuple); `metavar`: how help shows its value. The allowed range of a number, checked by `check_ranges`:
    `min`/`max` (inclusive), `above`/`below` (exclusive); a bounded number must be finite, and `finite=True`
    asks it of an unbounded one. None (an optional setting left out) is always allowed."""
    bounds = {k: v for k, v in (("min", min), ("max", max), ("above", above), ("below", below)) if v is not None}
    metadata = {"help": help, "flag": flag, "choices": tuple(choices) if choices is not None else None,
                "cli": cli, "show": show, "short": short, "multiple": multiple, "metavar": metavar,
                "range": bounds or None, "finite": bool(finite or bounds)}
    if default_factory is not MISSING:
        return _documenting(field(default_factory=default_factory, metadata=metadata))
    return _documenting(field(default=default, metadata=metadata))


def field_named(cls, name: str) -> dataclasses.Field:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def help_of(cls, name: str) -> str:
    return field_named(cls, name).metadata.get("help", "")


def flag_of(cls, name: str, prefix: str = "") -> str:
    """The command-line flag of a field: its declared flag, else `--` + (prefix + name) with dashes."""
    f = field_named(cls, name)
    return f.metadata.get("flag") or "--" + (prefix + name).replace("_", "-")


class FieldText(str):
    """A note that names settings with `ref` (`f"pass {ref('run')} to choose"`): as a str it reads with the
    field names (what a Python user passes); `config_cls` and `marked` let the CLI show its flags instead."""

    def __new__(cls, config_cls, marked: str):
        self = super().__new__(cls, render_refs(marked, str))
        self.config_cls, self.marked = config_cls, marked
        return self

    def __reduce__(self):   # copy/deepcopy (dataclasses.asdict) and pickle keep both views
        return FieldText, (self.config_cls, self.marked)


class SettingError(LessdbError):
    """One or more settings of a config are invalid. `problems` is a list of (field name or tuple of field
    names, what is wrong), or one sentence naming its fields with `ref` (`config_cls` None: the names are the
    command's own parameters, shown as `--name`); the message names the fields (`grad_kind 'x' is not one of
    ...`); `cli/` re-renders it with flag names."""

    def __init__(self, config_cls, problems: list[tuple[str | tuple | None, str]] | str, prefix: str = ""):
        if isinstance(problems, str):
            problems = [(None, problems)]
        self.config_cls, self.problems, self.prefix = config_cls, list(problems), prefix
        super().__init__(self.render(lambda name: name))

    def render(self, name_of) -> str:
        """The message with each field shown as `name_of(field)` (a tuple of fields reads "a or b")."""
        def names(name) -> str:
            return " or ".join(map(name_of, name)) if isinstance(name, tuple) else name_of(name)

        def text(sentence: str) -> str:
            return render_refs(sentence, name_of)

        return "; ".join(text(t) if name is None else f"{names(name)} {text(t)}" for name, t in self.problems)

    @property
    def fields(self) -> list[str]:
        """Every field the message names (the heads and the `ref`s), for tests and tools."""
        out = []
        for name, sentence in self.problems:
            out += [] if name is None else list(name) if isinstance(name, tuple) else [name]
            out += _REF_PATTERN.findall(sentence)
        return out


def check_choices(obj, problems: list[tuple[str, str]]) -> None:
    """Append a problem for every field with declared choices whose value is not one of them (each value of a
    `multiple` setting given as a list or tuple)."""
    for f in dataclasses.fields(obj):
        choices = f.metadata.get("choices")
        value = getattr(obj, f.name)
        values = value if f.metadata.get("multiple") and isinstance(value, (list, tuple)) else [value]
        for v in values:
            if choices and v is not None and v not in choices:
                problems.append((f.name, f"{v!r} is not one of {', '.join(map(str, choices))}"))


def range_problem(value, bounds: dict, finite: bool = True) -> str | None:
    """What is wrong with a number against declared bounds ({min, max, above, below}), or None. NaN is outside
    every bound; a bool is no number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{value!r}: must be a number"
    if finite and not math.isfinite(value):
        return f"{value}: must be a finite number"
    low = ("[", bounds["min"]) if "min" in bounds else ("(", bounds["above"]) if "above" in bounds else None
    high = ("]", bounds["max"]) if "max" in bounds else (")", bounds["below"]) if "below" in bounds else None
    ok = ((low is None or (value >= low[1] if low[0] == "[" else value > low[1]))
          and (high is None or (value <= high[1] if high[0] == "]" else value < high[1])))
    if ok:
        return None
    if low and high:
        return f"{value}: must be in {low[0]}{low[1]}, {high[1]}{high[0]}"
    if low:
        return f"{value}: must be {'at least' if low[0] == '[' else 'greater than'} {low[1]}"
    return f"{value}: must be {'at most' if high[0] == ']' else 'less than'} {high[1]}"


# The range every number keeps whatever its setting declares (issue 23): a float is finite (`--lr nan` would reach
# torch after the run was recorded), an integer fits the 64-bit columns and arrays it ends up in, a seed is 0 to
# 2**63 - 1 (numpy refuses negative seeds; DuckDB's BIGINT column refused 2**63 after the work was done).
INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1


def is_seed(name: str) -> bool:
    return name == "seed" or name.endswith("_seed")


def implied_problem(name: str, value) -> str | None:
    """What is wrong with a number whatever its setting declares (above), or None; a non-number: None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value}: must be a finite number"
    if is_seed(name) and not 0 <= value <= INT64_MAX:
        return f"{value}: a seed is between 0 and 2**63 - 1"
    if not INT64_MIN <= value <= INT64_MAX:
        return f"{value}: out of range (a 64-bit integer: at most 2**63 - 1 in size)"
    return None


def value_problem(name: str, value, declared: dict | None = None, finite: bool = False) -> str | None:
    """What is wrong with `value` for a setting (or a method parameter) called `name`: against its declared
    range first, then against the range every number keeps; None if nothing."""
    if value is None:
        return None
    if declared or finite:
        problem = range_problem(value, declared or {}, finite)
        if problem:
            return problem
    return implied_problem(name, value)


def check_ranges(obj, problems: list[tuple[str, str]]) -> None:
    """Append a problem for every number outside the range its setting declares (`setting(min=..., ...)`) or
    every number keeps (`implied_problem`)."""
    for f in dataclasses.fields(obj):
        problem = value_problem(f.name, getattr(obj, f.name), f.metadata.get("range"), f.metadata.get("finite"))
        if problem:
            problems.append((f.name, problem))


def raise_problems(obj, problems: list[tuple[str, str]]) -> None:
    if problems:
        raise SettingError(type(obj), problems)


# -- text given for typed settings ----------------------------------------------------------------------------
# A setting typed as a list of epochs or as a shard may come as text (the command line always gives text): one
# parser per shape, chosen by the field's annotation, so `featurize --checkpoints`, `select --checkpoints`,
# `featurize --shard` and `embed --shard` read and refuse text the same way.
_EPOCH_LIST = re.compile(r"^(tuple\[int, \.\.\.\]|list\[int\])")
_SHARD = "tuple[int, int]"


def _annotation(f: dataclasses.Field) -> str:
    return f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))


def parse_epochs(text: str) -> tuple[int, ...] | None:
    """'all' (or nothing) -> None (every checkpoint); '1,2' -> (1, 2). ValueError says what was expected."""
    if not text.strip() or text.strip().lower() == "all":
        return None
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"{text!r}: expected 'all' or epochs like 1,2") from None


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' -> (i, n); nothing -> (0, 1), the whole pool. ValueError says what was expected."""
    if not text.strip():
        return (0, 1)
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"{text!r}: expected i/n, e.g. 0/4 (i from 0 to n-1)") from None
    return (i, n)


def parse_setting(cls, name: str, value):
    """`value` for field `name` of `cls`: text for an epoch list or a shard parsed by the field's type (a
    SettingError naming the field if it does not parse); anything else unchanged."""
    if not isinstance(value, str):
        return value
    kind = _annotation(field_named(cls, name))
    try:
        if _EPOCH_LIST.match(kind):
            epochs = parse_epochs(value)
            return None if epochs is None else (list(epochs) if kind.startswith("list") else epochs)
        if kind.split("|")[0].strip() == _SHARD:
            return parse_shard(value)
    except ValueError as exc:
        raise SettingError(cls, [(name, str(exc))]) from None
    return value


# -- help(Config) lists the settings ----------------------------------------------------------------------------
class _SettingField(dataclasses.Field):
    """A field made by `setting`. Python calls `__set_name__` on each once its class exists (every field is in
    the class by then), so the first call writes the class's docstring from its settings: `help(SelectConfig)`
    shows each field's type, default, flag and help, whatever module declares the config."""
    __slots__ = ()

    def __set_name__(self, owner, name):
        super().__set_name__(owner, name)
        if owner not in _DOCUMENTED:
            _DOCUMENTED.add(owner)
            owner.__doc__ = settings_doc(owner)


_DOCUMENTED: "weakref.WeakSet[type]" = weakref.WeakSet()


def _documenting(f: dataclasses.Field) -> dataclasses.Field:
    f.__class__ = _SettingField   # same slots: only __set_name__ differs
    return f


def _shown(f: dataclasses.Field) -> str:
    if f.metadata.get("show") is not None:
        return f.metadata["show"]
    if f.default is not MISSING:
        return repr(f.default)
    if f.default_factory is not MISSING:
        made = f.default_factory()
        name = type(made).__name__
        return f"{name}() (its settings: help({name}))" if dataclasses.is_dataclass(made) else repr(made)
    return "required"


def settings_doc(cls) -> str:
    """`cls`'s docstring followed by one entry per setting: `name: type = default  [its flag]`, then its help,
    its choices and any declared bounds (`setting(min=..., max=..., above=..., below=...)`). Settings without a flag are library-only."""
    settings = [(name, value) for name, value in vars(cls).items() if isinstance(value, dataclasses.Field)]
    intro = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
    lines = [intro, ""] if intro else []
    lines.append("Settings (keyword arguments; the command-line flag in brackets):")
    annotations = cls.__dict__.get("__annotations__", {})
    for name, f in settings:
        meta = f.metadata
        kind = annotations.get(name, "")
        kind = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
        flag = meta.get("flag") or "--" + name.replace("_", "-")
        head = f"  {name}: {kind} = {_shown(f)}" + (f"  [{flag}]" if meta.get("cli", True) else "")
        notes = [meta.get("help", "")]
        if meta.get("choices"):
            notes.append("One of: " + ", ".join(map(str, meta["choices"])) + ".")
        words = {"min": ">=", "max": "<=", "above": ">", "below": "<"}
        bounds = [f"{words[key]} {value}" for key, value in (meta.get("range") or {}).items()]
        if bounds:
            notes.append("Must be " + " and ".join(bounds) + ".")
        lines.append(head)
        lines += textwrap.wrap(" ".join(n for n in notes if n), 100, initial_indent=" " * 6,
                               subsequent_indent=" " * 6, break_on_hyphens=False)
    return "\n".join(lines)
