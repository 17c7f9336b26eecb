"""What every `Workspace` method shares: one check of its keyword arguments, one way of turning settings into a
config, and one result shape for a record.

What a method returns is what its command prints with `--json`:
- one record (what the command did, or the one thing it shows) -> an object with `.as_dict()` (that JSON object)
  whose keys read as attributes: the stage's own result type (IngestReport, RunSummary, FeaturizeSummary,
  SelectionResult, EvalSummary, VerifyReport) or a `Record`;
- several rows (the listings) -> a list of dicts, one per row;
- a query (`sql`) -> a pyarrow.Table.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
from typing import Callable, Iterable

from ..errors import InputError
from ..settings import SettingError, parse_setting
from ..storage.damage import raise_if_damage


class Record(dict):
    """A record that has no result type of its own: the dict `--json` prints, whose keys also read as attributes
    (`ws.export(...).path`), with `as_dict()` like every other result."""

    __slots__ = ()

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"this record has no {name!r} (it has {', '.join(self)})") from None

    def as_dict(self) -> dict:
        return dict(self)


class UnknownSettingError(InputError, TypeError):
    """A keyword argument a `Workspace` method does not take (a typo, or another command's setting). Also a
    TypeError, which is what Python raises for an unknown keyword."""

    def __init__(self, method: str, name: str, takes: list[str]):
        close = difflib.get_close_matches(name, takes, n=3, cutoff=0.6)
        close += [t for t in takes if len(name) >= 3 and t.startswith(name) and t not in close]
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        self.method, self.name, self.takes = method, name, list(takes)
        super().__init__(f"{method}() has no setting {name!r} ({hint}it has {', '.join(takes)})")


def command(takes: Callable[[], Iterable[str]] | None = None, *, passes: tuple[str, ...] = ()):
    """Decorates every `Workspace` method: a keyword argument it does not take is refused with an
    UnknownSettingError, before anything runs; a workspace file found unreadable while it runs surfaces as
    `WorkspaceDamaged` (storage/damage.py), not as the library exception that found it. It takes its own named
    parameters and, if it has `**settings`, the names `takes()` lists (called on first use: the config classes
    load with their stage). `passes`: names let through unlisted, because the method refuses them itself with a
    more specific message."""

    def wrap(func):
        own = [name for name, p in inspect.signature(func).parameters.items()
               if name not in ("self", "cls") and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        names: list[str] = []

        def accepted() -> list[str]:
            if not names:
                names.extend(own + [n for n in (takes() if takes else ()) if n not in own])
            return names

        @functools.wraps(func)
        def method(*args, **kwargs):
            for key in kwargs:
                if key not in passes and key not in accepted():
                    raise UnknownSettingError(func.__name__, key, accepted())
            try:
                return func(*args, **kwargs)
            except Exception as exc:   # a workspace file that cannot be read: WorkspaceDamaged, as the CLI says it
                raise_if_damage(exc)
                raise

        method.accepted = accepted   # the docs test and the CLI test read it
        return method
    return wrap


def config_fields(*class_names: str, prefix: str = "", leave_out: Iterable[str] = ()) -> Callable[[], list[str]]:
    """`takes` for `command`: the fields of these `lessdb.config` classes (with `prefix`), less `leave_out`."""
    def names() -> list[str]:
        from .. import config

        skip = set(leave_out)
        return [prefix + f.name for name in class_names for f in dataclasses.fields(getattr(config, name))
                if f.name not in skip]
    return names


def make_config(cls, settings: dict, base=None, **named):
    """A `cls` from keyword settings, the same way for every method: None means "not given" (the field's default
    applies, or `base`'s value when a whole config is given too), and text for an epoch list or a shard is parsed
    by the field's type (`settings.parse_setting`)."""
    given = {key: parse_setting(cls, key, value) for key, value in {**settings, **named}.items() if value is not None}
    if base is None:   # a required setting left out is the user's to give, named as such (not a TypeError)
        missing = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in given
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise SettingError(cls, [(name, "is required") for name in missing])
    return cls(**given) if base is None else dataclasses.replace(base, **given)
