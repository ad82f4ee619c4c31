"""Learnt depth against the number of training points, 50 ... 2000 (paper Fig 6, right).

    python3 experiments/scan_data_amount.py --out docs/data/spirals_redrawn/scan_data_amount
    python3 experiments/scan_data_amount.py --quick   # a smoke run

Cost: 10 sizes x 6 seeds, each repeat on its own data draw: 38.9 min of recorded wall time on 2
CPU cores.

The paper finds d_opt grows with the data and saturates near 11 after about 500 points.
The test set stays 1800 points. Writes one results file per size, then fig6_data_amount.png.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def main(argv=None):
    return _common.scan(
        __doc__, "scan_data_amount",
        point_kwargs=lambda n: {"n_train": n, "n_points": n + 1800},
        argv=argv,
    )


if __name__ == "__main__":
    from vdjax.cli.validate import run_main

    sys.exit(run_main(main))
