"""``python -m pi05_policy.dataset``: the same as ``so101-dataset``."""

from __future__ import annotations

import sys

from pi05_policy.dataset.cli import main

sys.exit(main())
