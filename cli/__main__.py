"""`python -m mmedge.cli`: the same program as `mmedge`."""

from mmedge.cli.main import main

main()
