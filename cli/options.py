"""Click options generated from config dataclass fields (`lessdb.settings.setting`): the field is the one
definition of an option's default, help, choices and flag; this module only turns it into click.

    @options_from_dataclass(FeaturizeConfig, exclude={"checkpoints", "shard"})

Every field with `cli=True` becomes an option named by its declared flag (else the field's name with dashes)
whose click parameter is the field name, so the command passes its keyword arguments straight to the config.
`unset=True` gives every option the default None ("not given": a preset's value or the field's default applies)
while help still shows the field's default. A bool field whose default is True and whose declared flag is a
negation becomes that flag (given: False), as `--no-bias-correction`.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from dataclasses import MISSING

import click

from ..errors import LessdbError
from ..settings import INT64_MAX, FieldText, flag_of, implied_problem, render_refs


def _base_type(annotation) -> type | None:
    """int / float / str / bool from a field annotation (string annotations under `from __future__`)."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    for name, tp in (("bool", bool), ("int", int), ("float", float), ("str", str), ("Path", Path)):
        head = text.split("|")[0].strip()
        if head == name:
            return tp
    return None


def shown_default(f: dataclasses.Field) -> str | None:
    """The default as `--help` shows it: the field's `show`, else its value (None: nothing shown)."""
    if f.metadata.get("show") is not None:
        return f.metadata["show"]
    if f.default is MISSING or f.default is None:
        return None
    if isinstance(f.default, bool):
        return None
    return str(f.default)


def integer_type(f: dataclasses.Field):
    """The click type of an int flag: refuses, while the command line is parsed, what no value of the setting
    may be (beyond 64 bits; a seed below 0 or from 2**63: `settings.implied_problem`), which would otherwise fail
    only where the number meets a 64-bit column. Declared bounds, and floats (finite), are the config's to check
    before any work."""
    class _Integer(click.types.IntParamType):
        def convert(self, value, param, ctx):
            out = super().convert(value, param, ctx)
            problem = implied_problem(f.name, out)
            if problem:
                self.fail(problem, param, ctx)
            return out
    return _Integer()


def count_type(minimum: int):
    """The click type of a hand-written count flag (--top, --limit, --examples): from `minimum` to 2**63 - 1."""
    return click.IntRange(minimum, INT64_MAX)


def option_for(f: dataclasses.Field, *, prefix: str = "", flag: str | None = None, unset: bool = False,
               required: bool = False, help: str | None = None):
    """One click option for a dataclass field (see the module docstring)."""
    meta = f.metadata
    flag = flag or meta.get("flag") or "--" + (prefix + f.name).replace("_", "-")
    param = prefix + f.name
    text = help if help is not None else meta.get("help", "")
    tp = _base_type(f.type)
    if tp is bool:
        if flag.startswith("-" + "-no-"):   # a negated flag turns a default-True setting off
            return click.option(flag, param, flag_value=False, default=None if unset else True, help=text)
        return click.option(flag, param, is_flag=True, default=None if unset else bool(f.default), help=text)
    kwargs: dict = {"help": text}
    choices = meta.get("choices")
    if choices:
        kwargs["type"] = click.Choice(list(choices))
    elif tp is int:   # 64-bit integers, seeds from 0, refused while parsing
        kwargs["type"] = integer_type(f)
    elif tp is float:
        kwargs["type"] = tp
    elif tp is Path:
        kwargs["type"] = click.Path(path_type=Path)
    if required:
        kwargs["required"] = True
    if meta.get("metavar"):
        kwargs["metavar"] = meta["metavar"]
    names = [flag] + ([meta["short"]] if meta.get("short") else [])
    if meta.get("multiple"):   # repeatable: the command gets a tuple (empty when not given)
        return click.option(*names, param, multiple=True, **kwargs)
    shown = shown_default(f)
    if unset or f.default is MISSING or f.default is None or not isinstance(f.default, (int, float, str)):
        kwargs["default"] = None
        if shown is not None:   # click would show a string default in parentheses; say it as click does a value
            kwargs["help"] = f"{text}  [default: {shown}]"
    else:
        kwargs["default"] = f.default
        if f.metadata.get("show") is not None:
            kwargs["help"] = f"{text}  [default: {shown}]"
        else:
            kwargs["show_default"] = True
    return click.option(*names, param, **kwargs)


def options_from_dataclass(cls, *, exclude=(), only=None, prefix: str = "", unset: bool = False,
                           required=(), helps: dict | None = None):
    """A decorator adding one option per CLI field of `cls`, in field order. `only`: just these fields (in this
    order); `exclude`: not these; `required`: fields the command requires; `helps`: a command's own help for a
    field whose meaning there is narrower (rare; the field's help is the default)."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.metadata.get("cli", True) and "help" in f.metadata}
    names = list(only) if only is not None else [n for n in fields if n not in set(exclude)]
    helps = helps or {}

    def decorate(command):
        for name in reversed(names):
            command = option_for(fields[name], prefix=prefix, unset=unset, required=name in required,
                                 help=helps.get(name))(command)
        return command
    return decorate


def flag_name(config_cls, field: str, prefix: str = "") -> str:
    """The flag a user types for a field of a config (the one mapping from field names to flags); warmup's and
    train's flat names (lora_r, lr, ...) resolve through `config.flat_settings`; a command's own parameters
    (`config_cls` None, or a name the config lacks) are `--` + the name with dashes."""
    from ..runs.config import flat_settings

    if config_cls is not None:
        try:
            return flag_of(config_cls, field, prefix)
        except KeyError:
            pass
    owner = flat_settings().get(field)
    return flag_of(*owner) if owner else "--" + field.replace("_", "-")


def setting_error_message(exc: LessdbError) -> str:
    """A library error (which names fields: a SettingError, or any message with `ref`s) as the CLI says it,
    with flags."""
    return exc.render(lambda name: flag_name(exc.config_cls, name, exc.prefix))


def shown_with_flags(text: str) -> str:
    """A library note as the CLI says it: a `FieldText` names its fields by their flags; other text as is."""
    if isinstance(text, FieldText):
        return render_refs(text.marked, lambda name: flag_name(text.config_cls, name))
    return text


def preset_help(presets: dict[str, dict], flat_settings: dict[str, tuple[type, str]], top_cls,
                intro: str = "") -> str:
    """`--preset` help generated from the presets themselves: each preset's name and the flags it sets."""
    parts = []
    for name, values in presets.items():
        if not values:
            parts.append(f"{name}: the paper's defaults")
            continue
        flags = []
        for key, value in values.items():
            owner = flat_settings.get(key)
            flag = flag_name(*owner) if owner else flag_name(top_cls, key)
            flags.append(f"{flag} {value}")
        parts.append(f"{name}: " + " ".join(flags))
    return (intro + " " if intro else "") + "; ".join(parts) + ". Explicit flags override it."

