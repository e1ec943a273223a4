"""``python -m so101_driver.feetech.emulator``: the same as ``so101-servo-emulator``."""

from __future__ import annotations

from so101_driver.feetech.emulator.cli import main

if __name__ == '__main__':
    main()
