"""python -m dynattn: the dynattn command line."""

from .cli import main

if __name__ == "__main__":  # not again in a worker process spawned by ``dynattn search --workers``
    raise SystemExit(main())
