"""Entry point of the `lessdb` command. Every `cli/*_cmds.py` module registers its commands on `cli`."""
from __future__ import annotations

import importlib
import pkgutil
import sys

import click

from ..errors import LessdbError
from .common import cli


def _register_commands() -> None:
    package = importlib.import_module(__package__)
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.endswith("_cmds"):
            importlib.import_module(f"{__package__}.{info.name}")


_register_commands()


def main(argv=None):
    try:
        cli.main(args=argv, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except LessdbError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    sys.exit(0)


if __name__ == "__main__":
    main()
