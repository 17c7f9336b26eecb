"""`invalid(...)`: a SettingError about `select`'s settings (SelectConfig fields), for the modules that plan.py
imports and that therefore cannot import SelectConfig at their top. The CLI shows the fields as flags."""
from __future__ import annotations

from ..settings import SettingError


def invalid(problems: list[tuple] | str) -> SettingError:
    """`problems` as for SettingError: [(field, what is wrong)] or one sentence naming fields with `ref`."""
    from .plan import SelectConfig

    return SettingError(SelectConfig, problems)
