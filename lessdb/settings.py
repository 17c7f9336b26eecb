"""Settings declared once: a config dataclass field carries its default, its help and (when it is a command-line
option) its flag, so the CLI's options, their shown defaults, the presets' help and the error messages all come
from the field (`cli/options.py` builds the click options; kronfluence's `arguments.py` does the same).

    dim: int = setting(8192, "Sketch dimension d.")
    grad_kind: str = setting("adam", "adam: LESS's Adam direction; ...", flag="--grad", choices=GRAD_KINDS)

Library code names fields, never flags: `SettingError` carries the field names of what is wrong, and the CLI
shows them as its flags (`flag_of`), so a Python user reads `grad_kind`, a shell user `--grad`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import MISSING, field

from .errors import LessdbError

# the one fallback for a token window nothing recorded (an old run, a base model): the paper's
DEFAULT_MAX_SEQ_LENGTH = 2048


def setting(default=MISSING, help: str = "", *, default_factory=MISSING, flag: str | None = None,
            choices=None, cli: bool = True, show: str | None = None, short: str | None = None):
    """A dataclass field with its help. `flag`: the option's name when it is not the field's name with dashes; `choices`: the
    allowed values (validated, and a click.Choice); `cli=False`: no command-line option (library-only knob);
    `show`: the default as help shows it, when the value itself does not say it (None means "computed");
    `short`: a one-letter alias of the flag (`-p`)."""
    metadata = {"help": help, "flag": flag, "choices": tuple(choices) if choices is not None else None,
                "cli": cli, "show": show, "short": short}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


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


class SettingError(LessdbError):
    """One or more settings of a config are invalid. `problems` is a list of (field name or tuple of field
    names, what is wrong); the
    message names the fields (`grad_kind 'x' is not one of ...`); `cli/` re-renders it with flag names."""

    def __init__(self, config_cls, problems: list[tuple[str, str]], prefix: str = ""):
        self.config_cls, self.problems, self.prefix = config_cls, list(problems), prefix
        super().__init__(self.render(lambda name: name))

    def render(self, name_of) -> str:
        """The message with each field shown as `name_of(field)` (a tuple of fields reads "a or b")."""
        def names(name) -> str:
            return " or ".join(map(name_of, name)) if isinstance(name, tuple) else name_of(name)
        return "; ".join(f"{names(name)} {text}" for name, text in self.problems)


def check_choices(obj, problems: list[tuple[str, str]]) -> None:
    """Append a problem for every field with declared choices whose value is not one of them."""
    for f in dataclasses.fields(obj):
        choices = f.metadata.get("choices")
        value = getattr(obj, f.name)
        if choices and value is not None and value not in choices:
            problems.append((f.name, f"{value!r} is not one of {', '.join(map(str, choices))}"))


def raise_problems(obj, problems: list[tuple[str, str]]) -> None:
    if problems:
        raise SettingError(type(obj), problems)
