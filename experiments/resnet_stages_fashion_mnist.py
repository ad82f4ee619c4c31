"""python3 experiments/resnet_stages_fashion_mnist.py: about 35 minutes on 2 idle cores, longer while
other runs share them. Measured (docs/data/resnet_stages/, the committed default run; it resumed
after epoch 2): at load below 2 one LDN epoch (3 seeds, 3,601 images) took 24-43 s, the DDN programs
at depths 1, 7 and 9 took 92 s, 544 s and 525 s, evaluation 68 s and timing 113 s.

A multi-stage ResNet learns its depth across stages on Fashion-MNIST. Three stages of
pre-activation basic blocks (BN-ReLU-Conv3x3, twice; 3 blocks each, widths 16/32/64 at 14x14,
7x7 and 4x4), entered through stride-2 BN-ReLU-Conv3x3 transitions, after a 3x3 conv + 2x2
average-pool stem; every block's globally pooled activations reach one shared head (a residual
MLP block, then Linear to 10 classes) through its stage's exit, a Linear map to a common width
of 64 (`vdjax.nn.resnet`). Depth d counts blocks over all stages (max depth 9), so q(d) is one
categorical over the whole network, and pruning to d_opt cuts the network after its d_opt-th
block: later stages go.

Default run: a seeded subset of 4,000 training images (10% of it the stratified validation split
that early stopping watches) and the full 10,000-image test set; 3 seeds; SGD lr 0.1, momentum
0.5, batch 64, at most 20 epochs, patience 8, the learning rate dropped 10x after half of the
epochs (both methods). Trains the 3 LDNs as one program, then DDNs (one per seed) at depths 1,
the LDNs' median d_opt and 9 (one program per depth), then evaluates and times
(`vdjax.studies.depth_demo`): q(d), d_opt (95% rule and argmax q), test LL / error / ECE of the
full and pruned LDNs and the DDNs with paired t-tests over seeds, the early-exit curve beside
fixed-depth pruning, and the wall time of the full, pruned and early-exit predictors at batch
1024 and 16. Writes <out>/resnet_stages_fashion_mnist.json, the weights under <out>/weights and
training checkpoints under <out>/checkpoints (a killed run resumes when run again with the same
options). `--tiny` is a smoke test: 80 s with a warm compilation cache, 5 minutes cold at load 8.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from vdjax.cli import validate  # noqa: E402

NAME = "resnet_stages_fashion_mnist"


@dataclasses.dataclass(frozen=True)
class Preset(_common.DemoPreset):
    """What a run trains unless the command line says otherwise; the learning rate drops 10x
    after half of the epochs."""

    blocks: tuple[int, ...] = (3, 3, 3)
    widths: tuple[int, ...] = (16, 32, 64)
    common: int = 64
    n_train: int = 4000
    n_test: int | None = None
    epochs: int = 20
    patience: int = 8
    batch_size: int = 64
    drop_words = "half"

    def drop_epoch(self, epochs: int) -> int:
        return max(1, epochs // 2)


DEFAULT = Preset()
TINY = Preset(blocks=(1, 1, 1), widths=(4, 8, 8), common=8, seeds=(0, 1), n_train=200, n_test=100, epochs=2,
              patience=2, batch_size=32, timing_examples=32, timing_batches=(32, 8), timing_repeats=1,
              timing_seeds=1)


def parser() -> validate.ArgumentParser:
    p = validate.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common.add_demo_arguments(
        p, DEFAULT, "results/resnet_stages", committed="docs/data/resnet_stages/",
        tiny="3 stages of one block (widths 4/8/8), 200 training and 100 test images, 2 epochs, seeds 0 1, seed 0 "
             "timed at batches 32 and 8")
    p.add_argument("--n-train", type=validate.positive_int, default=None,
                   help="seeded training subset, validation split included (default 4000 of 60000)")
    p.add_argument("--n-test", type=validate.positive_int, default=None, help="test subset (default: all 10000)")
    p.add_argument("--data-dir", type=validate.existing_dir, default=None,
                   help="directory with the Fashion-MNIST IDX files (default: Debian's "
                        "/usr/share/datasets/fashion-mnist, ~/.vdjax/data/fashion_mnist, or TFDS)")
    return p


def demo_config(args, preset: Preset):
    """The `DemoConfig` of this command line."""
    about = (f"{len(preset.blocks)}-stage pre-activation ResNet, blocks {list(preset.blocks)}, widths "
             f"{list(preset.widths)}, exits Linear to {preset.common}; Fashion-MNIST")
    return _common.demo_config(args, preset, name=NAME, max_depth=sum(preset.blocks), about=about,
                               script="resnet_stages_fashion_mnist.py")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    args.argv = argv
    preset = TINY if args.tiny else DEFAULT
    out = args.out or validate.output_dir("results/resnet_stages")
    config = demo_config(args, preset)  # bad settings fail here, before any data or JAX work
    from vdjax.runtime import start_script

    start_script()
    from vdjax.data.images import load_images
    from vdjax.nn.resnet import depth_factory
    from vdjax.studies.depth_demo import run_demo

    data = load_images("fashion_mnist", args.data_dir, n_train=args.n_train or preset.n_train,
                       n_test=args.n_test or preset.n_test)
    make = depth_factory(preset.blocks, preset.widths, num_classes=data.num_classes, input_shape=data.input_shape,
                         common=preset.common)
    result = run_demo(make, data, config, out)
    s = result["test"]["summary"]
    print(f"d_opt per seed {result['d_opt']['rule_95']} (argmax {result['d_opt']['argmax']}); LDNs learnt: "
          f"{result['learnt']['ldn']}; test error full {s['ldn_full']['error']['mean']:.3f}, pruned "
          f"{s['ldn_pruned']['error']['mean']:.3f}; {result['wall_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(validate.run_main(main))
