"""`python -m newsletter`: the same command as `newsletter`."""

from .cli import cli

cli(prog_name="newsletter")
