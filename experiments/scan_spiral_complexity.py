"""Learnt depth against spiral complexity: rotation 180 ... 1260 degrees (paper Fig 6, left).

    python3 experiments/scan_spiral_complexity.py --out docs/data/spirals_redrawn/scan_spiral_complexity
    python3 experiments/scan_spiral_complexity.py --quick   # a smoke run

Cost: 7 rotations x 6 seeds, each repeat on its own data draw: 13.5 min of recorded wall time on 2
CPU cores.

The paper finds d_opt grows with the rotation, and test performance suffers past 720
degrees with D=20. Writes one results file per rotation, then fig6_complexity.png.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def main(argv=None):
    return _common.scan(
        __doc__, "scan_spiral_complexity",
        point_kwargs=lambda r: {"rotation": float(r)},
        argv=argv,
    )


if __name__ == "__main__":
    from vdjax.cli.validate import run_main

    sys.exit(run_main(main))
