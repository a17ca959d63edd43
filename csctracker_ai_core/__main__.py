"""``python -m csctracker_ai_core``: the ``csc-ai`` command line (see :mod:`.cli`)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
