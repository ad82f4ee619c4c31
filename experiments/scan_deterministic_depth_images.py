"""Deterministic-depth CNNs (DDNs) on images, one per depth: the paper's baseline (Fig 4's
per-depth test log-likelihood, overlaid on the LDN's q(d) when scan_max_depth_images has run
into the same --out).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _images  # noqa: E402


def main(argv=None):
    return _images.run(__doc__, cpu_depths=[0, 2, 5, 10, 15, 20], methods=lambda d: ["ddn"], argv=argv)


if __name__ == "__main__":
    from vdjax.cli.validate import run_main

    sys.exit(run_main(main))
