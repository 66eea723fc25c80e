"""``python -m dynattn.bench``: the same command as ``dynattn bench`` (the preset suite; with
``--network``, whole networks)."""

import sys

from .command import main, wants_networks
from .networks import main as networks_main

argv = sys.argv[1:]
raise SystemExit(networks_main(argv) if wants_networks(argv) else main(argv))
