"""The LDN against NAS baselines on the depth search space (beyond the paper).

Runs the LDN, a grid search over DDNs (the paper's baseline), DARTS (first and second order),
the Tensorflow-DARTS mixed-op variants (binary, binary_masked, proxyless, moving_average,
gumbel) and SMASH-style one-shot search on the same model and data, several seeds each, and
records for every final network the chosen depth, test log-likelihood, error and ECE, and the
cost of search and final training (wall time with and without compiling; gradient evaluations,
forward passes and Hessian-vector products, counted as they run). See vdjax.baselines.search and
vdjax.studies.search_compare.

Default (CPU-sized, a few minutes on 2 cores): spirals (200 train / 1800 test points, width 20,
max depth 10, 3 seeds, 2000 search steps, networks trained up to 2000 epochs with patience 200)
and a Fashion-MNIST subset (512 train / 500 test, max depth 4, 2 seeds, 150 search steps of
batch 32, networks trained 6 epochs of batch 32). --paper-protocol trains every network with the paper's
protocol instead (spirals: up to 8000 epochs, patience 500; images: batch 512, up to 500 epochs).
Writes rows.json (the raw results) and comparison.png to --out and prints the summary table.
With --out docs/data/nas_comparison, `python3 tools/report.py` renders the committed tables
(docs/results/nas.md) from it.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vdjax.cli import validate  # noqa: E402


def parser():
    from vdjax.studies.search_compare import ALL

    p = validate.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["spirals", "fashion_mnist"], help="spirals and/or an image set")
    p.add_argument("--strategies", nargs="+", choices=list(ALL), default=list(ALL), metavar="STRATEGY",
                   help=f"from {list(ALL)}")
    p.add_argument("--seeds", type=validate.positive_int, default=None,
                   help="seeds per data set (default 3 spirals, 2 images)")
    p.add_argument("--max-depth", type=validate.positive_int, default=None, help="D (default 10 spirals, 4 images)")
    p.add_argument("--search-steps", type=validate.positive_int, default=None, help="default 2000 spirals, 150 images")
    p.add_argument("--paper-protocol", action="store_true", help="train every network with the paper's protocol")
    p.add_argument("--n-train", type=validate.positive_int, default=512, help="image train subset")
    p.add_argument("--n-test", type=validate.positive_int, default=500, help="image test subset")
    p.add_argument("--image-epochs", type=validate.positive_int, default=6,
                   help="epochs of every image network (CPU default)")
    p.add_argument("--data-dir", type=validate.existing_dir, default=None)
    p.add_argument("--out", type=validate.output_dir, default="results/compare_search_strategies",
                   help="results directory (created if missing)")
    return p


def setting(name, args):
    """(data, model config, train config, search config, seeds) for one data set."""
    from vdjax.nn.models import ModelConfig
    from vdjax.baselines.search import SearchConfig
    from vdjax.training.config import TrainConfig

    if name == "spirals":
        from vdjax.data import SpiralsConfig, spirals_dataset

        data = spirals_dataset(SpiralsConfig())
        train = TrainConfig() if args.paper_protocol else TrainConfig(max_epochs=2000, patience=200)
        model = ModelConfig("mlp", args.max_depth or 10, 2, (2,))
        search = SearchConfig("darts1", steps=args.search_steps or 2000)
        return data, model, train, search, list(range(args.seeds or 3))
    from vdjax.data.images import load_images
    from vdjax.training.config import IMAGE_PROTOCOL, PAPER_IMAGE_PROTOCOL

    data = load_images(name, args.data_dir, n_train=args.n_train, n_test=args.n_test)
    train = PAPER_IMAGE_PROTOCOL if args.paper_protocol else IMAGE_PROTOCOL.replace(
        batch_size=32, max_epochs=args.image_epochs, lr_drop_epoch=None)
    model = ModelConfig("cnn", args.max_depth or 4, data.num_classes, data.input_shape)
    search = SearchConfig("darts1", steps=args.search_steps or 150, batch_size=32)
    return data, model, train, search, list(range(args.seeds or 2))


def main(argv=None):
    args = parser().parse_args(argv)
    from vdjax.data.images import check_available
    from vdjax.io import write_json
    from vdjax.studies.plots import plot_search_comparison
    from vdjax.runtime import environment
    from vdjax.studies.search_compare import compare, markdown_table, summary_table

    validate.unique(args.datasets, "--datasets")
    for name in args.datasets:  # every data set is there before the first search starts
        if name != "spirals":
            check_available(name, args.data_dir)
    rows, start, env = [], time.perf_counter(), environment()
    for name in args.datasets:
        data, model, train, search, seeds = setting(name, args)
        rows += [{**row, "environment": env} for row in compare(data, model, args.strategies, seeds, train, search)]
        write_json(args.out / "rows.json", {"rows": rows})  # after each data set: a crash keeps what is done
    table = summary_table(rows)
    fig = plot_search_comparison(table, args.out / "comparison.png")
    print(markdown_table(table))
    print(f"done in {time.perf_counter() - start:.0f} s; wrote {args.out / 'rows.json'} and {fig}")
    return table


if __name__ == "__main__":
    from vdjax.cli.validate import run_main

    sys.exit(run_main(main))
