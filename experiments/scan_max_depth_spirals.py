"""LDNs on spirals with max depth D = 5, 10, ..., 100 (paper Fig 2, right).

    python3 experiments/scan_max_depth_spirals.py --out docs/data/spirals_redrawn/scan_max_depth_spirals
    python3 experiments/scan_max_depth_spirals.py --quick   # a smoke run

Cost: 20 depths x 6 seeds, each repeat on its own data draw: 68.5 min of recorded wall time on
2 CPU cores.

The paper finds the learnt depth d_opt and the test log-likelihood stable as D grows.
Writes one results file per D to --out, then fig2_max_depth.png.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def main(argv=None):
    return _common.scan(
        __doc__, "scan_max_depth_spirals",
        point_kwargs=lambda d: {"max_depth": d},
        argv=argv,
    )


if __name__ == "__main__":
    from vdjax.cli.validate import run_main

    sys.exit(run_main(main))
