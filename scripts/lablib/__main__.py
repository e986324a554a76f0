"""`python -m scripts.lablib` is `scripts/lab`."""

from __future__ import annotations

import sys

from scripts.lablib.cli import main

sys.exit(main())
