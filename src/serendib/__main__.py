"""``python -m serendib``: the same as the ``serendib`` command."""

from __future__ import annotations

import sys

from serendib.cli import main

sys.exit(main())
