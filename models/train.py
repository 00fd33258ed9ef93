"""Train the demo models: `python -m mmedge.models.train MODEL [options]`.

Dispatches to one trainer module per model (each has its own --help).
"""

from __future__ import annotations

import importlib
import sys

TRAINERS = {
    "captioner": "mmedge.models.train_captioner",
    "soundnet": "mmedge.models.train_audio",
    "voice-encoder": "mmedge.models.train_audio",
}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in TRAINERS:
        print(f"usage: python -m mmedge.models.train {{{','.join(TRAINERS)}}} [--help | options]", file=sys.stderr)
        raise SystemExit(0 if argv and argv[0] in ("-h", "--help") else 2)
    from mmedge.errors import MissingDependencyError, require

    try:
        require("torch", "training")
    except MissingDependencyError as e:  # a device install: one line, no traceback
        print(f"mmedge: error: {e}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    importlib.import_module(TRAINERS[argv[0]]).main(argv)


if __name__ == "__main__":
    main()
