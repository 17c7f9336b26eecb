"""Errors a user sees. The CLI prints their message and exits non-zero; no traceback.

A message names a setting by its field, written `ref("pool")`: `str(error)` reads `pool` (what a Python user
passes), and the CLI shows the flag (`--pool`) through its one field->flag mapping (`cli/options.py`).
"""
from __future__ import annotations

import re

# marks a field named inside a message; a control character no command line or config can contain
_REF = "\x1f"
_REF_PATTERN = re.compile(_REF + r"(\w+)" + _REF)


def ref(name: str) -> str:
    """Field `name` inside a message: shown as the field's name to a Python user, as its flag by the CLI."""
    return f"{_REF}{name}{_REF}"


def render_refs(text: str, name_of) -> str:
    """`text` with each `ref(field)` shown as `name_of(field)`."""
    return _REF_PATTERN.sub(lambda m: name_of(m.group(1)), text)


class LessdbError(Exception):
    """Any failure that is the user's to fix (bad input, missing workspace, wrong arguments)."""

    exit_code = 1
    config_cls = None   # the config whose fields the message names (None: the command's own parameters)
    prefix = ""

    def render(self, name_of) -> str:
        """The message with each field it names shown as `name_of(field)`."""
        return render_refs(super().__str__(), name_of)

    def __str__(self) -> str:
        return self.render(str)


class InputError(LessdbError):
    """Bad input data, located as precisely as we can: file, line (JSON text) or row (a Parquet/Arrow file, a
    Python object: 0-based, as pyarrow and pandas count, with its row group or record batch), and field."""

    exit_code = 2

    def __init__(self, reason: str, file: str | None = None, line: int | None = None, field: str | None = None,
                 row: int | None = None, group: str | None = None):
        self.reason, self.file, self.line, self.row, self.group = reason, file, line, row, group
        self.field = None if field is None else render_refs(field, str)   # a setting (`ref`) reads as its name
        super().__init__(self.location(field) + reason)

    def location(self, field: str | None = None) -> str:
        """The message's prefix: file, line N (or row group G, row N), field 'x' (`field`: as given, a `ref` the
        CLI shows as a flag)."""
        field = self.field if field is None else field
        parts = []
        if self.file is not None:
            parts.append(str(self.file))
        if self.line is not None:
            parts.append(f"line {self.line}")
        if self.group is not None:
            parts.append(self.group)
        if self.row is not None:
            parts.append(f"row {self.row}")
        if field is not None:
            parts.append(f"field '{field}'")
        return (", ".join(parts) + ": ") if parts else ""


class WorkspaceError(LessdbError):
    """The workspace is missing, locked for too long, or from a newer lessdb."""


class WorkspaceDamaged(WorkspaceError):
    """A file of the workspace cannot be read as written (a missing or truncated Lance data file or manifest, a
    damaged DuckDB file): not the user's input and not a bug. One line, and `lessdb verify` says what and how to
    fix it. `lessdb.storage.damage` tells these apart from other exceptions."""

    def __init__(self, what: str):
        self.what = what
        super().__init__(f"the workspace is damaged: {what}; run `lessdb verify` to see what is wrong and how to "
                         "fix it")
