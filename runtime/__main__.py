"""``python -m runtime``: see :mod:`runtime.cli`."""

from runtime.cli import main

raise SystemExit(main())
