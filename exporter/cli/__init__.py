"""The `cnnexport` command line: parse, call the library once, print, exit. Nothing else lives here.

export.py   a verb per row of the stage table (flags from its options model, exporter/targets/<target>/row.py)
check.py    inspect, verify, bench, eval
recipes.py  architectures, recipes, run, demo
release.py  sign, and verify DIR --public-key
params.py   the shared flags, and stage flags generated from the options models
ui.py       output, and typed errors -> one sentence + exit code (codes: exporter/errors.py)
"""

from __future__ import annotations

import sys

import typer

from exporter.cli import check, export, recipes, release
from exporter.cli.params import Group

app = typer.Typer(
    name="cnnexport",
    help="Turn a trained PyTorch CNN checkpoint into deployment artifacts and prove each one "
    "numerically against the PyTorch model.\n\nExit codes: 0 ok, 1 verification failed, "
    "2 bad input or usage, 3 backend not available here, 4 internal error (a bug), 130 interrupted.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    cls=Group,
)

export.register(app)
check.register(app)
recipes.register(app)
release.register(app)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
