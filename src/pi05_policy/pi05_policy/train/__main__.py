"""``python -m pi05_policy.train``: the same as ``so101-train``."""

import sys

from pi05_policy.train.cli import main

sys.exit(main())
