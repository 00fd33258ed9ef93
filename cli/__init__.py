"""The `mmedge` command line (typer). `python -m mmedge` is the same program.

Every command has --help; commands that print results take --json (one JSON document on
stdout, logs on stderr). The modules only parse and print; what a command does is one call
into the layers below:

- common.py: stdout/stderr output, the error boundary (MmedgeError -> one line, exit code),
  the options several commands share;
- export_cmds.py: models, demo, export, package;
- run_cmds.py: caption, embed, refocus;
- check_cmds.py: parity, eval, profile, doctor;
- main.py: the app with its commands in help order, `run`/`main`, the `--ray` argv rewrite.

Heavy packages are imported inside the commands so `mmedge --help` is instant and the runtime
commands work without torch.
"""

from mmedge.cli.main import app, main, ray_argv, run

__all__ = ["app", "main", "ray_argv", "run"]
