"""``python -m pos3``: the command line (see `pos3.cli`)."""

from .cli import run

run()
