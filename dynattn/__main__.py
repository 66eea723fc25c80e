"""python -m dynattn: the dynattn command line."""

from .cli import main

raise SystemExit(main())
