"""`python -m mmedge` is the same program as the `mmedge` command."""

from mmedge.cli import main

main()
