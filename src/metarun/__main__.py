"""`python -m metarun` is the `metarun` command."""

from metarun.commands.cli import main

main()
