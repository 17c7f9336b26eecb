"""What each comparison trains on: recorded selections of the same pool, filter, target and size as the selection
being validated (found by name, else selected now and recorded like any selection), one per seed for the random
draws and the full-pool stand-in.

`full` trains on the whole filtered pool at the SAME NUMBER OF OPTIMIZER STEPS as the selection: one pass over a
seeded random draw of steps x batch candidates of the filtered pool, which is exactly the first `steps` steps of an
epoch over the whole pool in a random order (the cosine schedule spanning those steps). The same epochs would cost
~20x the selection's training on a 5% selection; the record says which (`full_budget: same-steps`)."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import LessdbError
from ..storage import meta_selections
from .config import refuse

NEEDS_RUN = ("rds+", "hybrid")


@dataclass
class TrainingSet:
    comparison: str            # "selection", "random", "bm25", ..., "full"
    seed: int                  # the training seed
    selection_id: str          # what `train --selection` gets
    epochs: int | None = None  # overrides the budget's epochs (full: one pass)


def comparison_name(base: str, label: str) -> str:
    return f"{base}.{label}"[:128]


def _existing(ws, name: str) -> dict | None:
    try:
        return meta_selections.get_selection(ws, name)
    except LessdbError:   # "no selection": not selected yet
        return None


def find_or_select(ws, sel: dict, label: str, method: str, *, count: int | None, max_tokens: int | None,
                   seed: int = 0, progress: bool = True) -> str:
    """The id of the comparison selection named `<selection>.<label>`, selected now if it is not recorded yet."""
    base = sel.get("name") or sel["selection_id"]
    name = comparison_name(base, label)
    found = _existing(ws, name)
    if found is not None:
        if found["method"] != method or (count is not None and found["k"] != count):
            raise refuse("selection", f"selection {name!r} exists but is not {method} with {count} members; "
                                      "rename it to let validate record its comparison")
        return found["selection_id"]
    params = sel.get("params") or {}
    settings = {"method": method, "pool": params.get("pool"), "where": sel.get("sql_filter"), "name": name,
                "seed": seed, "progress": progress}
    if count is not None:
        settings["count"] = count
    else:
        settings["max_tokens"] = max_tokens
        budget_on = (params.get("budget") or {}).get("budget_on")
        if budget_on:
            settings["budget_on"] = budget_on
    if method in NEEDS_RUN and sel.get("run_id"):
        settings["run"] = sel["run_id"]
    if sel.get("checkpoints") and method == "hybrid":
        settings["checkpoints"] = sel["checkpoints"]
    return ws.select(sel["task"], **settings).selection_id


def member_tokens(ws, selection_id: str) -> int:
    """Completion tokens of a selection's members (the same-tokens budget)."""
    total, missing = meta_selections.member_completion_tokens(ws, selection_id)
    if missing:
        raise refuse("budget", f"same-tokens: {missing} members of selection {selection_id} have no token count; "
                               "use --budget same-count")
    return total
