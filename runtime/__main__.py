"""``python -m runtime``: see :mod:`runtime.cli`."""

import sys

try:
    from runtime.cli import main
except KeyboardInterrupt:  # Ctrl-C while the libraries load: one line, as during a run
    print("interrupted (Ctrl-C)", file=sys.stderr)
    raise SystemExit(130) from None

raise SystemExit(main())
