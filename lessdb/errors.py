"""Errors a user sees. The CLI prints their message and exits non-zero; no traceback."""
from __future__ import annotations


class LessdbError(Exception):
    """Any failure that is the user's to fix (bad input, missing workspace, wrong arguments)."""

    exit_code = 1


class InputError(LessdbError):
    """Bad input data, located as precisely as we can: file, line and field."""

    exit_code = 2

    def __init__(self, reason: str, file: str | None = None, line: int | None = None, field: str | None = None):
        self.reason, self.file, self.line, self.field = reason, file, line, field
        super().__init__(self.location() + reason)

    def location(self) -> str:
        parts = []
        if self.file is not None:
            parts.append(str(self.file))
        if self.line is not None:
            parts.append(f"line {self.line}")
        if self.field is not None:
            parts.append(f"field '{self.field}'")
        return (", ".join(parts) + ": ") if parts else ""


class WorkspaceError(LessdbError):
    """The workspace is missing, locked for too long, or from a newer lessdb."""
