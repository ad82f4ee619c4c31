"""nice -n 10 python3 experiments/lm_fortunes.py: about 15 minutes on this 2-core machine when
idle, about an hour at load average ~13. Measured (docs/data/lm_fortunes/lm_fortunes.json, the
committed default run): the 3 LDNs' epochs took 13-27 s at load below 3 and up to 99 s on a
heavily shared machine (566 s in all, over the calls that resumed it); the DDN programs at
depths 1, 2 and 8 took 46 s, 81 s and 284 s, evaluation 62 s and timing 8 s.

A causal transformer language model learns how many layers it needs. Character-level next-token
prediction on real English text, Debian's fortunes corpus (/usr/share/games/fortunes,
`apt-get install fortunes`), split 80/10/10 by document (`vdjax.data.text`: 99 symbols, the
printable ASCII characters, tab, newline, an end-of-document and an unknown token), in
non-overlapping windows of T = 64 characters whose 64 next characters are the targets.

The network, written as Flax NNX modules (`vdjax.nn.transformer`): a token and a learned position
embedding (the stem), up to D = 8 pre-norm causal transformer layers of width 32 with 2 attention
heads and a 4x MLP (each block the layer's residual branch, its output projections zero-initialised,
so that every depth starts as the stem alone), and one shared head (LayerNorm, Linear to the 99
symbols) reading the residual stream after every layer: outputs [D + 1, batch, T, 99]. q(d) =
softmax of learnt depth logits over d = 0..D is trained with the weights by the exact ELBO. An
example is a window: its log-likelihood is the sum over its T positions, each position weighted
alike, and KL(q || prior) enters divided by N, the number of training windows. Metrics are per
token: log-likelihood per token, perplexity exp(-LL per token), token error, and ECE over every
position's prediction.

Default run: the first 2,000 training windows (whole documents in the split's seeded order; 6% of
the 31,025), the first 500 validation windows (early stopping watches their ELBO) and the first
1,000 test windows (64,000 test tokens); 3 seeds; SGD lr 0.01, momentum 0.9, batch 32, at most 15
epochs, patience 4, the learning rate dropped 10x after 11 epochs (3/4 of them), for both methods.
The learning rate is from a probe (this network, one seed, 2,000 training windows, batch 32,
momentum 0.9, 5 epochs = 315 steps, no drop): validation LL per token after 315 steps -2.685 at
lr 0.001, -2.641 at 0.003, -2.619 at 0.01, and 0.03 diverged (NaN) in its first epoch. A window's
loss sums its 64 positions, so lr 0.01 is a per-token rate of 0.64 (x 1 / (1 - 0.9) with the
momentum). With 15 epochs, 4 run at the dropped rate; the convergence rule reads those
(`depth_demo.learnt_record`: the last quarter of the epochs since the last change of learning rate).

q(d) follows the depth whose training loss is lowest at the time: the prior (decay 0.85) enters
as KL / N with N = 2,000 windows, about 1e-3 nats a window against differences of nats between
depths. In the committed default run each seed's argmax q was fixed early (seed 0 moved from 2 to
3 at epoch 6) and the seeds ended at d_opt 3, 2 and 1; a shorter run reports a shallower d_opt.

Trains the 3 LDNs as one program, then DDNs (one per seed) at depths 1, the LDNs' median d_opt
and D (one program per depth; --ddn-depths adds more), then evaluates and times
(`vdjax.studies.depth_demo`): q(d), d_opt (95% rule and argmax q), test log-likelihood per
token, perplexity, token error and ECE of the full and the pruned LDNs and of the DDNs, with
paired t-tests over seeds, the early-exit curve per token beside fixed-depth pruning, and the
wall time of the full, pruned and early-exit predictors on seed 0's weights, 256 test windows in
batches of 256 and of 16.

Writes <out>/lm_fortunes.json, the weights under <out>/weights and training checkpoints under
<out>/checkpoints (a killed run resumes when run again with the same options). `--tiny` is a
smoke test (80 s at load 8, several minutes at load 13), for the tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

from vdjax.cli import validate  # noqa: E402

NAME = "lm_fortunes"
SCRIPT = "lm_fortunes.py"
FORTUNES_DIR = "/usr/share/games/fortunes"  # vdjax.data.text.FORTUNES_DIR, without importing JAX to print --help
TRAIN_WINDOWS = 31025  # training windows of T = 64 in the whole corpus (vdjax.data.text)


@dataclasses.dataclass(frozen=True)
class Preset(_common.DemoPreset):
    """The network and the data of a run, besides what every demonstration sets."""

    width: int = 32
    heads: int = 2
    seq_len: int = 64
    max_depth: int = 8
    n_train: int | None = 2000  # None: every window of the split
    n_val: int | None = 500
    n_test: int | None = 1000


DEFAULT = Preset(seeds=(0, 1, 2), epochs=15, patience=4, batch_size=32, learning_rate=0.01, momentum=0.9,
                 timing_examples=256, timing_batches=(256, 16), timing_repeats=3, timing_seeds=1)
TINY = Preset(width=8, heads=2, seq_len=16, max_depth=2, n_train=96, n_val=32, n_test=32, seeds=(0, 1), epochs=2,
              patience=2, batch_size=32, learning_rate=0.01, momentum=0.9, timing_examples=32,
              timing_batches=(32, 8), timing_repeats=1, timing_seeds=1)


def parser() -> validate.ArgumentParser:
    p = validate.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common.add_demo_arguments(
        p, DEFAULT, f"results/{NAME}",
        tiny=f"width {TINY.width}, {TINY.heads} heads, T {TINY.seq_len}, max depth {TINY.max_depth}, "
             f"{TINY.n_train} / {TINY.n_val} / {TINY.n_test} train / validation / test windows, {TINY.epochs} "
             f"epochs, seeds {' '.join(map(str, TINY.seeds))}, seed {TINY.seeds[0]} timed at batches "
             f"{' and '.join(map(str, TINY.timing_batches))}")
    p.add_argument("--max-depth", type=validate.positive_int, default=None,
                   help=f"D, the most transformer layers: the LDN's depth (default {DEFAULT.max_depth})")
    p.add_argument("--width", type=validate.positive_int, default=None,
                   help=f"the residual stream's width (default {DEFAULT.width})")
    p.add_argument("--heads", type=validate.positive_int, default=None,
                   help=f"attention heads per layer; they must divide the width (default {DEFAULT.heads})")
    p.add_argument("--seq-len", type=validate.positive_int, default=None,
                   help=f"T, characters per window (default {DEFAULT.seq_len})")
    p.add_argument("--n-train", type=validate.positive_int, default=None,
                   help=f"training windows, the first of the split (default {DEFAULT.n_train} of {TRAIN_WINDOWS:,} at "
                        "T = 64)")
    p.add_argument("--n-val", type=validate.positive_int, default=None,
                   help=f"validation windows early stopping watches (default {DEFAULT.n_val} of 3,947 at T = 64)")
    p.add_argument("--n-test", type=validate.positive_int, default=None,
                   help=f"test windows (default {DEFAULT.n_test} of 3,911 at T = 64); the evaluation holds every "
                        "depth's outputs, (D + 1) x n_test x T x 99 floats")
    p.add_argument("--all-windows", action="store_true",
                   help="every window of each split (overrides --n-train, --n-val and --n-test)")
    p.add_argument("--corpus", type=validate.existing_dir, default=None,
                   help=f"the fortunes directory (default {FORTUNES_DIR}: apt-get install fortunes)")
    return p


def settings(args, preset: Preset) -> Preset:
    """The preset with the command line's network and data options applied."""
    changes = {k: getattr(args, k) for k in ("width", "heads", "seq_len", "max_depth", "n_train", "n_val", "n_test")
               if getattr(args, k) is not None}
    if args.all_windows:
        changes.update(n_train=None, n_val=None, n_test=None)
    chosen = dataclasses.replace(preset, **changes)
    if chosen.width % chosen.heads:
        raise validate.UserError(f"--heads {chosen.heads} does not divide --width {chosen.width}")
    return chosen


def make_factory(preset: Preset, vocab_size: int):
    """`max_depth -> Network`: the causal transformer LM with that many layers (the LDN at D, a DDN
    below it)."""
    from vdjax.nn.network import Network
    from vdjax.nn.nnx import nnx_module
    from vdjax.nn.transformer import CausalBlock, LMHead, TokenStem

    stem = nnx_module(TokenStem, vocab_size, preset.seq_len, preset.width)
    block = nnx_module(CausalBlock, preset.width, preset.heads)
    head = nnx_module(LMHead, preset.width, vocab_size)

    def make(max_depth: int) -> Network:
        return Network(stem=stem, block=block, head=head, max_depth=max_depth, num_classes=vocab_size,
                       input_shape=(preset.seq_len,), target_shape=(preset.seq_len,), inputs="tokens")

    return make


def load_windows(preset: Preset, root: str):
    """The fortunes windows of `preset.seq_len`, each split cut to its first n windows."""
    from vdjax.data.text import fortunes_dataset

    data = fortunes_dataset(seq_len=preset.seq_len, root=root)
    cut = {}
    for split, n in (("train", preset.n_train), ("val", preset.n_val), ("test", preset.n_test)):
        cut[f"x_{split}"], cut[f"y_{split}"] = getattr(data, f"x_{split}")[:n], getattr(data, f"y_{split}")[:n]
    return dataclasses.replace(data, **cut)


def about(preset: Preset) -> str:
    return (f"causal pre-norm transformer LM (Flax NNX), width {preset.width}, {preset.heads} heads, MLP 4x, up to "
            f"{preset.max_depth} layers, a shared LayerNorm + Linear head after every layer; character-level "
            f"fortunes (Debian), windows of {preset.seq_len}, split by document; metrics per token")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    args.argv = argv
    preset = settings(args, TINY if args.tiny else DEFAULT)
    out = args.out or validate.output_dir(f"results/{NAME}")
    config = _common.demo_config(args, preset, name=NAME, max_depth=preset.max_depth, about=about(preset),
                                 script=SCRIPT)  # bad settings fail here, before any data or JAX work
    from vdjax.data.text import corpus_files

    root = str(args.corpus or FORTUNES_DIR)
    corpus_files(root)  # a missing corpus: one line, before JAX starts
    from vdjax.runtime import start_script

    start_script()
    from vdjax.studies.depth_demo import run_demo

    data = load_windows(preset, root)
    result = run_demo(make_factory(preset, data.num_classes), data, config, out)
    s = result["test"]["summary"]
    print(f"q(d) seed {result['ldn'][0]['seed']}: {[round(v, 3) for v in result['ldn'][0]['q']]}; d_opt per seed "
          f"{result['d_opt']['rule_95']} (argmax {result['d_opt']['argmax']}); LDNs learnt: {result['learnt']['ldn']}; "
          f"test perplexity full {s['ldn_full']['perplexity']['mean']:.2f}, pruned "
          f"{s['ldn_pruned']['perplexity']['mean']:.2f}; {result['wall_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(validate.run_main(main))
