"""Learnt-depth CNNs on images at several maximum depths D (paper Figs 4, 9, 10, 11).

For every D this trains the LDN and the DDN of the same depth, so each LDN results file also
holds that DDN's metrics and the forward-pass speed-up of the LDN pruned to d_opt over it.
The paper finds d_opt well below D and stable as D grows, pruned LDNs as accurate as the
best DDNs, LDNs better calibrated than DDNs (Fashion-MNIST, SVHN), and pruned inference at
D=50 62% (MNIST), 41% (Fashion-MNIST) and 37% (SVHN) faster.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _images  # noqa: E402


def main(argv=None):
    return _images.run(__doc__, cpu_depths=[5, 10, 20], methods=lambda d: ["ddn", "ldn"], argv=argv)


if __name__ == "__main__":
    from vdjax.cli.validate import run_main

    sys.exit(run_main(main))
