"""Reproduce a published table: `python scripts/reproduce.py ga-omniglot [--budget quick]`.

The same as the `metarun-reproduce` command; see `metarun-reproduce --help`.
"""

from metarun.commands.reproduce import main

if __name__ == "__main__":
    main()
