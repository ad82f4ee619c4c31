"""What both image experiment scripts share: the command line, the CPU-sized default and the
paper-scale grid (--paper), and the loop over (data set, depth, seed)."""
from __future__ import annotations

import argparse
import time

from vdjax import validate

PAPER_DEPTHS = [*range(0, 51, 5), *range(60, 101, 10)]
PAPER_DATASETS = ["mnist", "fashion_mnist", "svhn"]
PAPER_REPEATS = 4

CPU_HELP = """
Default (CPU-sized, about ten minutes on 2 cores): Fashion-MNIST, a seeded subset of 1024 train
and 1000 test images, batch 128, 8 epochs with the learning rate dropped 10x after epoch 5,
one seed. --paper selects the paper's setting: MNIST, Fashion-MNIST and SVHN in full, batch 512,
up to 500 epochs (early stopping after 30 epochs without a better test ELBO, the learning rate
dropped after 30 epochs), 4 repeats, depths 0,5,...,50,60,...,100. That is GPU work.

Data: the original files in --data-dir (or ~/.vdjax/data/<name>, $VDJAX_DATA/<name>, and for
Fashion-MNIST /usr/share/datasets/fashion-mnist from Debian's dataset-fashion-mnist), else
TFDS. Each network writes <out>/<data set>/<method>_D<depth>_s<seed>.json (+ .msgpack); a
finished one is skipped on rerun and a killed one resumes from its last epoch's checkpoint.
"""


def parser(doc: str, cpu_depths: list[int]) -> argparse.ArgumentParser:
    p = validate.ArgumentParser(description=doc + CPU_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--paper", action="store_true", help="the paper's full grid, data and protocol (GPU work)")
    p.add_argument("--datasets", nargs="+", default=None,
                   help="mnist, fashion_mnist, svhn (default: fashion_mnist; --paper: all three)")
    p.add_argument("--depths", type=validate.non_negative_int, nargs="+", default=None,
                   help=f"depths to train (default {cpu_depths}; --paper: {PAPER_DEPTHS})")
    p.add_argument("--seeds", type=validate.seed, nargs="+", default=None, help="seeds (default 0; --paper: 0 1 2 3)")
    p.add_argument("--n-train", type=validate.positive_int, default=None,
                   help="train subset size (default 1024; --paper: all)")
    p.add_argument("--n-test", type=validate.positive_int, default=None,
                   help="test subset size (default 1000; --paper: all)")
    p.add_argument("--max-epochs", type=validate.positive_int, default=None, help="default 8; --paper: 500")
    p.add_argument("--batch-size", type=validate.positive_int, default=None, help="default 128; --paper: 512")
    p.add_argument("--data-dir", type=validate.existing_dir, default=None,
                   help="directory with the original data files")
    p.add_argument("--source", choices=["auto", "files", "tfds"], default="auto", help="where to read the data")
    p.add_argument("--out", type=validate.output_dir, default="results/images",
                   help="results directory, shared by both image scripts (DDNs are reused)")
    p.add_argument("--no-progress", action="store_true", help="no per-epoch progress bars")
    return p


def settings(args, cpu_depths: list[int]):
    """(datasets, depths, seeds, train_config, subset sizes) from the command line."""
    from vdjax.trainer import IMAGE_PROTOCOL

    if args.paper:
        datasets, depths, seeds = PAPER_DATASETS, PAPER_DEPTHS, list(range(PAPER_REPEATS))
        train, n_train, n_test = IMAGE_PROTOCOL, None, None
    else:
        datasets, depths, seeds = ["fashion_mnist"], cpu_depths, [0]
        train = IMAGE_PROTOCOL.replace(batch_size=128, max_epochs=8, lr_drop_epoch=5)
        n_train, n_test = 1024, 1000
    train = train.replace(**{k: v for k, v in (("max_epochs", args.max_epochs), ("batch_size", args.batch_size))
                             if v is not None})
    return (args.datasets or datasets, args.depths or depths, args.seeds or seeds, train,
            args.n_train or n_train, args.n_test or n_test)


def run(doc: str, cpu_depths: list[int], methods, argv=None):
    """Trains methods(depth) for every (data set, depth, seed), then draws every figure it can."""
    args = parser(doc, cpu_depths).parse_args(argv)
    from vdjax.data.images import check_available, load_images
    from vdjax.image_runs import ImagePoint, image_figures, run_image_point

    datasets, depths, seeds, train, n_train, n_test = settings(args, cpu_depths)
    validate.unique(seeds, "--seeds")
    for name in datasets:  # every data set is there before the first network trains
        check_available(name, args.data_dir, args.source)
    start = time.perf_counter()
    for name in datasets:
        data = load_images(name, args.data_dir, source=args.source, n_train=n_train, n_test=n_test)
        print(f"{data.name}: {data.n_train} train / {len(data.x_test)} test images {data.input_shape}, "
              f"depths {depths}, seeds {seeds}, batch {train.batch_size}, up to {train.max_epochs} epochs")
        for depth in depths:
            for seed in seeds:
                for method in methods(depth):
                    run_image_point(data, ImagePoint(method, depth, seed), train, args.out,
                                    progress=not args.no_progress)
    paths = image_figures(args.out, datasets)
    print(f"done in {time.perf_counter() - start:.0f} s; figures: " + ", ".join(str(p) for p in paths))
    return paths
