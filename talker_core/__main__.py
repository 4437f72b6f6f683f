"""``python -m talker_core ...``: see :mod:`talker_core.cli`."""

from talker_core.cli import main

raise SystemExit(main())
