"""Entry point of the `lessdb` command. Every `cli/*_cmds.py` module registers its commands on `cli`.

No input shows a Python traceback. Exit codes:
  0 success · 1 an error the user can fix (LessdbError, an OS error such as a permission) · 2 bad input or
  usage (InputError: file, line and field; click's usage errors) · 70 an unexpected internal error (a bug:
  a one-line summary, and the traceback with LESSDB_DEBUG=1) · 130 interrupted.
"""
from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import traceback

import click

from ..errors import InputError, LessdbError
from .common import cli
from .options import setting_error_message

EXIT_INTERNAL = 70          # EX_SOFTWARE (sysexits.h)
DEBUG_ENV = "LESSDB_DEBUG"


def _register_commands() -> None:
    package = importlib.import_module(__package__)
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.endswith("_cmds"):
            importlib.import_module(f"{__package__}.{info.name}")


_register_commands()


def main(argv=None):
    try:
        _check_arguments(sys.argv[1:] if argv is None else argv)
        _run(argv)
    except click.exceptions.Abort:
        _say("Aborted.")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except LessdbError as exc:   # the library names fields; the user typed flags
        _debug_traceback()
        _say(f"Error: {setting_error_message(exc)}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _say("Interrupted.")
        sys.exit(130)
    except BrokenPipeError:
        _quiet_stdout()       # `lessdb sql ... | head`: the reader left; nothing more to say
        sys.exit(1)
    except OSError as exc:    # the environment, not a bug: a permission, a full disk, a missing folder
        _debug_traceback()
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        _say(f"Error: {where}{exc.strerror or exc}")
        sys.exit(1)
    except Exception as exc:  # a bug in lessdb: say so briefly, never a traceback unless asked
        if _debug():
            traceback.print_exc()
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        _say(f"Internal error: {type(exc).__name__}: {first}\n"
             f"This is a bug in lessdb, not in your input. Rerun with {DEBUG_ENV}=1 to see the traceback "
             "and include it in a report.")
        sys.exit(EXIT_INTERNAL)
    sys.exit(0)


def _run(argv) -> None:
    """The command; a file of the workspace that cannot be read (storage/damage.py) is not a bug: exit 1 and
    point to `lessdb verify`."""
    from ..storage.damage import raise_if_damage

    try:
        cli.main(args=argv, standalone_mode=False)
    except Exception as exc:
        raise_if_damage(exc)
        raise


def _check_arguments(args) -> None:
    """Invalid UTF-8 in an argument reaches Python as lone surrogates (PEP 383), which DuckDB, LanceDB and
    the terminal cannot encode; refuse it up front, naming the argument."""
    args = list(args)
    for i, arg in enumerate(args):
        if isinstance(arg, str):
            try:
                arg.encode("utf-8")
            except UnicodeEncodeError as exc:
                before = args[i - 1] if i else ""
                name = before if before.startswith("-") and "=" not in before else f"argument {i + 1}"
                raise InputError(f"not valid UTF-8 (character {exc.start + 1} of {_printable(arg)!r}); lessdb "
                                 "takes UTF-8 names, paths and values", field=name) from None


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _say(text: str) -> None:
    """Print to stderr even when the message carries text the terminal cannot encode."""
    try:
        click.echo(_printable(text), err=True)
    except (UnicodeError, OSError):
        sys.stderr.buffer.write(text.encode("ascii", "backslashreplace") + b"\n")


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _debug_traceback() -> None:
    if _debug():
        traceback.print_exc()


def _quiet_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    main()
