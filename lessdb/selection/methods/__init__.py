"""Selection methods as plug-ins: every method (LESS, its ablations, the baselines) is a `score` function
registered under its name. `select` plans (task, pool, filter, run, feature set: `selection/plan.py`), calls the
method's `score(ws, plan, ids) -> Scores`, and takes the max over subtasks, the top k and the record from there
(`selection/record.py`). The `--method` choices of `lessdb select` are this registry's names.

Adding a method touches one new file: a module in this package (every module here is imported on first use, in
name order) that decorates its scorer. Its parameters are a frozen dataclass; they are recorded with the
selection (under `params[<params_key>]`) and a replay rebuilds them from the record (a field missing from an
older record takes its default). Users set them with `SelectConfig(method_params={...})` or
`lessdb select --method-param KEY=VALUE`. Every value is a finite number or a 64-bit integer; a params class
with a `problems()` method (a list of "key=value: what is wrong") adds its own ranges, checked before any work.

    # lessdb/selection/methods/length.py
    from dataclasses import dataclass
    import numpy as np
    from . import Scores, register_method
    from ..reading import iter_texts, scorable_mask

    @dataclass(frozen=True)
    class LengthParams:
        longest: bool = True          # prefer long (True) or short answers

    @register_method("length", params=LengthParams, help="text length (a toy baseline)")
    def length_scores(ws, plan, ids):
        mask, unscorable = scorable_mask(ws, plan, ids)
        scores = np.zeros((len(ids), 1))
        for row, text in iter_texts(ws, plan, ids, mask):
            scores[row, 0] = len(text) if plan.method_params.longest else -len(text)
        return Scores(scores, mask, ("*",), unscorable)

A scorer returns `Scores`: per-subtask scores [N, m] over `ids` (the filtered candidates, sorted), which rows are
valid (a candidate that cannot be scored is never selected), the subtask names (("*",) for one task-wide score)
and counts of unscorable candidates by reason. `plan.options` has the run's batch size, device and progress
switch; `plan.replaying` says whether this is a replay (then read what the record pins, compute nothing new).
`register_method` options say what planning must find first: `needs_run` (a warmup run), `feature_kind` and
`feature_required` (a feature set of that gradient kind: required and recorded, or only used for the exclusions
of candidates without completion tokens), and `prepare(ws, plan, cfg, run)` for family-specific planning (checkpoints,
token windows, models) that must be recorded. Keep module-level imports light (numpy at most): `lessdb --help`
imports this package to list the methods; load torch inside the scorer.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import MISSING, dataclass, fields, is_dataclass
from typing import Callable

import numpy as np

from ...errors import LessdbError
from ...settings import ref, value_problem
from ..config import invalid


@dataclass
class Scores:
    per_subtask: np.ndarray     # [N, m] over the plan's filtered ids
    valid: np.ndarray           # [N] bool: scored (the rest are never selected)
    subtasks: tuple[str, ...]   # m names; ("*",) for a single task-wide score
    unscorable: dict[str, int]  # reason -> count
    n_coarse_only: int = 0      # scored only by a prefilter's first stage (counted as scored, never selected)


@dataclass(frozen=True)
class Method:
    name: str
    score: Callable              # score(ws, plan, ids) -> Scores
    params: type | None = None   # frozen dataclass of the method's parameters (recorded, replayed)
    params_key: str | None = None  # where they are recorded in the selection's params (default: the name)
    family: str = ""             # the module that registered it (gradient, text, hidden, ...)
    help: str = ""
    needs_run: bool = False      # needs a warmup run (its model, checkpoints or features)
    feature_kind: str | None = None   # gradient kind of the run's feature set it reads
    feature_required: bool = False   # True: scores those features (recorded as feature_set_id); False: only
                                     # uses its exclusions when one exists (recorded as exclusions_from)
    prepare: Callable | None = None  # prepare(ws, plan, cfg, run): family planning, recorded in plan.params

    def make_params(self, given: dict | None, where: str | None = None):
        """The typed parameters from a dict (user input or a record); absent fields take their defaults."""
        user = where is None   # a record's parameters are taken as recorded (they replay as they ran)
        where = where or ref("method_params")   # a record's parameters say which selection instead
        given = dict(given or {})
        if self.params is None:
            if given:
                raise invalid(f"{where}: method {self.name} takes no parameters (got {', '.join(given)})")
            return None
        names = {f.name: f for f in fields(self.params)}
        unknown = [k for k in given if k not in names]
        if unknown:
            raise invalid(f"{where}: method {self.name} has no parameter {', '.join(map(repr, unknown))} "
                          f"(it has {', '.join(names) or 'none'})")
        values = {}
        for key, value in given.items():
            default = names[key].default
            if isinstance(default, bool) and isinstance(value, str):
                if value.lower() not in _BOOLS:
                    raise invalid(f"{where}: {self.name} parameter {key}={value!r}: expected true or false")
                value = _BOOLS[value.lower()]
            if default is not MISSING and value is not None and not isinstance(value, type(default)):
                try:
                    value = type(default)(value)
                except (TypeError, ValueError) as exc:
                    raise invalid(f"{where}: {self.name} parameter {key}={value!r}: expected "
                                  f"{type(default).__name__}") from exc
            problem = value_problem(key, value) if user else None   # finite floats, 64-bit ints, seeds >= 0
            if problem:
                raise invalid(f"{where}: {self.name} parameter {key}={problem}")
            values[key] = value
        params = self.params(**values)
        wrong = params.problems() if user and hasattr(params, "problems") else []   # the method's own ranges
        if wrong:
            raise invalid(f"{where}: {self.name} parameter " + "; ".join(wrong))
        return params

    @property
    def record_key(self) -> str:
        return self.params_key or self.name


_BOOLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
_REGISTRY: dict[str, Method] = {}
_DISCOVERED = False


def register_method(name: str, *, params: type | None = None, params_key: str | None = None, help: str = "",
                    needs_run: bool = False, feature_kind: str | None = None, feature_required: bool = False,
                    prepare: Callable | None = None):
    """Decorator: register `score(ws, plan, ids) -> Scores` as selection method `name` (lower case)."""
    if params is not None and not is_dataclass(params):
        raise TypeError(f"method {name}: params must be a dataclass, not {params!r}")

    def decorate(score: Callable) -> Callable:
        key = name.lower()
        family = score.__module__.rsplit(".", 1)[-1]
        old = _REGISTRY.get(key)
        if old is not None and (old.score.__module__, old.score.__qualname__) != (score.__module__,
                                                                                   score.__qualname__):
            raise LessdbError(f"selection method {key!r} is registered twice ({old.score.__module__} and "
                              f"{score.__module__})")
        _REGISTRY[key] = Method(key, score, params, params_key, family, help, needs_run, feature_kind,
                                feature_required, prepare)
        return score

    return decorate


def unregister_method(name: str) -> None:
    """Remove a method (tests that register a throwaway one clean up with this)."""
    _REGISTRY.pop(name.lower(), None)


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def method_names() -> tuple[str, ...]:
    """Every registered method, in registration order (families in module-name order)."""
    _discover()
    return tuple(_REGISTRY)


def get_method(name: str) -> Method:
    _discover()
    method = _REGISTRY.get((name or "").lower())
    if method is None:
        raise invalid([("method", f"{name!r}: choose one of {', '.join(_REGISTRY)}")])
    return method


__all__ = ["Scores", "Method", "register_method", "unregister_method", "method_names", "get_method"]
