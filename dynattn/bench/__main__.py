"""``python -m dynattn.bench``: the same command as ``dynattn bench`` (the preset suite; with
``--network``, whole networks)."""

import sys

from ..cli import main

raise SystemExit(main(["bench", *sys.argv[1:]]))
