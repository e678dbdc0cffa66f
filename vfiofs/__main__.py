"""``python -m vfiofs`` is the ``vfiofs`` command."""

from .cli import main

raise SystemExit(main())
