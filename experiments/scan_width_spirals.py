"""Learnt depth against block width 2 ... 512 (paper Fig 5, log axis).

    python3 experiments/scan_width_spirals.py --out docs/data/spirals_redrawn/scan_width_spirals
    python3 experiments/scan_width_spirals.py --quick   # a smoke run

Cost: 9 widths x 6 seeds, each repeat on its own data draw: 273 min of recorded wall time on 2
CPU cores shared with other jobs, most of it widths 256 and 512.

The paper finds d_opt falls quickly as the width grows, with stable test performance for
mid-range widths. Writes one results file per width, then fig5_width.png.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def main(argv=None):
    return _common.scan(
        __doc__, "scan_width_spirals",
        point_kwargs=lambda w: {"width": w},
        argv=argv,
    )


if __name__ == "__main__":
    from vdjax.cli.validate import run_main

    sys.exit(run_main(main))
