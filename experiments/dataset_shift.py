"""Dataset shift and OOD detection on Fashion-MNIST (DUN, Sec. 5.2 / Fig. 6, with rotated
MNIST there): log-likelihood, error, ECE and Brier score of the LDN, a DDN, a deep ensemble and
MC dropout as the test images are rotated by 0-180 degrees in steps of 15; and the AUC-ROC of
telling out-of-distribution images from in-distribution ones by predictive entropy.

    python3 experiments/dataset_shift.py --out results/dun   # the defaults, as committed in docs/data/dun/

Cost: about 5 min of wall time on 2 CPU cores (`wall_seconds` in
docs/data/dun/shift_fashion_mnist.json: loading and training, rotations, OOD, test-time cost).

The OOD split is made offline from Fashion-MNIST itself: the networks train on --in-classes
(default 0-4: T-shirt, trouser, pullover, dress, coat) and the test images of the other
classes (sandal, shirt, sneaker, bag, ankle boot) are out of distribution. The rotation study
uses the in-distribution test images. When MNIST (or KMNIST) files are found
(~/.vdjax/data/<name>, $VDJAX_DATA/<name>), their test images are scored as OOD too.

Writes <out>/shift_fashion_mnist.json and <out>/shift_fashion_mnist.png.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _dun  # noqa: E402

from vdjax.cli import validate  # noqa: E402

ANGLES = list(range(0, 181, 15))

CPU = _dun.DunPreset("""\
python3 experiments/dataset_shift.py: about 5 minutes on 2 idle CPU cores. 1024 train images
(in-distribution: about 1000, 10% of them the validation split), 500 test images (about 480
in-distribution), CNN max depth 3, width 32, bottleneck 16, batch 64, SGD lr 0.05 momentum
0.5, up to 25 epochs with patience 5, 3 ensemble members, 10 dropout samples.""",
                     max_depth=3, width=32, bottleneck=16, lr=0.05, momentum=0.5, batch_size=64, max_epochs=25,
                     patience=5, ensemble_size=3, n_train=1024, n_test=500)
PAPER = _dun.DunPreset("""\
python3 experiments/dataset_shift.py --paper: GPU work. All Fashion-MNIST images, max depth 10,
width 64, bottleneck 32, batch 512, lr 0.1 momentum 0.5 (the image protocol), up to 100 epochs
with patience 10, 5 ensemble members.""",
                       max_depth=10, width=64, bottleneck=32, lr=0.1, momentum=0.5, batch_size=512, max_epochs=100,
                       patience=10, ensemble_size=5)


def main(argv=None) -> int:
    p = _dun.parser(__doc__ + _dun.presets_help(CPU, PAPER), "dun_shift")
    p.add_argument("--n-train", type=validate.positive_int, default=None, help="train subset (default 1024; --paper: all)")
    p.add_argument("--n-test", type=validate.positive_int, default=None, help="test subset (default 500; --paper: all)")
    p.add_argument("--in-classes", type=validate.non_negative_int, nargs="+", default=[0, 1, 2, 3, 4],
                   help="classes trained on; the rest are OOD (default 0 1 2 3 4)")
    p.add_argument("--data-dir", type=validate.existing_dir, default=None, help="Fashion-MNIST files")
    p.add_argument("--bottleneck", type=validate.positive_int, default=None,
                   help="CNN bottleneck channels (default 16; --paper 32)")
    args = p.parse_args(argv)
    _dun.check_rates(args)
    in_classes = validate.unique(args.in_classes, "--in-classes")
    if not 1 < len(in_classes) < 10 or max(in_classes) > 9:
        raise validate.UserError(f"--in-classes must be 2 to 9 distinct classes in 0..9, got {in_classes}")

    from vdjax.data.images import IMAGE_DATASETS, check_available, load_images

    check_available("fashion_mnist", args.data_dir, source="files")
    extra_ood = []
    for name in ("mnist", "kmnist"):
        if name in IMAGE_DATASETS:
            try:
                check_available(name, source="files")
                extra_ood.append(name)
            except FileNotFoundError:
                pass

    import time

    import jax
    import numpy as np
    from tqdm import tqdm

    from vdjax.baselines.dun import (Baselines, classification_metrics, ensemble_predictive, fit_methods,
                                     ldn_predictive, mc_dropout_predictive, ddn_predictive, method_predictives,
                                     predictive_probs)
    from vdjax.io import save_figure, write_json
    from vdjax.nn.models import ModelConfig
    from vdjax.baselines.shift import auroc, class_split, predictive_entropy, rotate_images
    from vdjax.training.config import RunOptions, TrainConfig

    spec = IMAGE_DATASETS["fashion_mnist"]
    wall, t0 = {}, time.perf_counter()
    s = _dun.settings(args, CPU, PAPER)
    full = load_images("fashion_mnist", args.data_dir, source="files", n_train=s.n_train and s.n_train * 2,
                       n_test=s.n_test and s.n_test * 2, seed=args.seed)
    data, x_ood = class_split(full, in_classes)
    cfg = ModelConfig("cnn", s.max_depth, len(in_classes), data.input_shape, width=s.width, bottleneck=s.bottleneck)
    tc = TrainConfig(learning_rate=s.lr, momentum=s.momentum, batch_size=s.batch_size or data.n_train,
                     max_epochs=s.max_epochs, patience=s.patience, stop_on="val", prior_decay=1.0)
    trained = fit_methods(data, cfg, tc, args.seed, Baselines(s.ensemble_size, args.dropout_rate),
                          RunOptions(progress=not args.no_progress, log=tqdm.write))
    wall["load_and_train"], t0 = time.perf_counter() - t0, time.perf_counter()
    key = jax.random.key(args.seed)
    predict = {
        "ldn": lambda x: ldn_predictive(cfg, trained.ldn, x),
        "ddn": lambda x: ddn_predictive(cfg, trained.ddns[0], x),
        "ensemble": lambda x: ensemble_predictive(cfg, trained.ddns, x),
        "dropout": lambda x: mc_dropout_predictive(trained.dropout_config, trained.dropout, x, key, args.samples),
    }
    black = (0.0 - spec.mean[0]) / spec.std[0]  # the normalised value of an empty pixel, for the corners
    rotation, h_in = {m: [] for m in predict}, {}
    for angle in tqdm(ANGLES, desc="rotations", disable=args.no_progress):
        x = rotate_images(data.x_test, angle, fill=black)
        for m, f in predict.items():
            pred = f(x)
            rotation[m].append({"angle": angle, **classification_metrics(pred, data.y_test)})
            if angle == 0:  # the in-distribution entropies the OOD scores are ranked against
                h_in[m] = predictive_entropy(predictive_probs(pred))
    wall["rotations"], t0 = time.perf_counter() - t0, time.perf_counter()

    ood_sets = {"fashion_mnist_held_out_classes": x_ood}
    for name in extra_ood:
        other = load_images(name, source="files", n_train=1, n_test=len(data.x_test), seed=args.seed)
        ood_sets[name] = other.x_test
    ood = {}
    for m, f in predict.items():
        ood[m] = {name: auroc(h_in[m], predictive_entropy(predictive_probs(f(x)))) for name, x in ood_sets.items()}
    wall["ood"], t0 = time.perf_counter() - t0, time.perf_counter()
    _, seconds = method_predictives(trained, data.x_test, key, args.samples)
    wall["test_time_cost"] = time.perf_counter() - t0

    result = {"dataset": data.name, "in_classes": in_classes, "n_train": data.n_train, "n_val": data.n_val,
              "n_test": len(data.x_test), "n_ood": {k: len(v) for k, v in ood_sets.items()}, "paper": args.paper,
              "model_config": repr(cfg), "train_config": repr(tc), "ensemble_size": len(trained.ddns),
              "dropout_rate": args.dropout_rate, "dropout_samples": args.samples,
              "q": np.asarray(trained.ldn.q).tolist(), "rotation": rotation, "ood_auroc": ood,
              "test_time_seconds": seconds, "training": trained.summary(),
              "wall_seconds": {k: round(v, 1) for k, v in wall.items()}}
    path = write_json(args.out / "shift_fashion_mnist.json", result)

    from vdjax.studies.plots import subplots

    fig, axes = subplots(1, 4, figsize=(16, 3.4))
    for ax, (stat, label) in zip(axes, (("log_lik", "test log-likelihood"), ("error", "error"), ("ece", "ECE"),
                                        ("brier", "Brier score"))):
        for i, m in enumerate(predict):
            ax.plot(ANGLES, [r[stat] for r in rotation[m]], marker="o", ms=3, label=m, c=f"C{i}")
        ax.set_xlabel("rotation (degrees)")
        ax.set_title(label)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Fashion-MNIST classes {in_classes}: rotated test images")
    save_figure(fig, args.out / "shift_fashion_mnist.png")
    for m in predict:
        r0, r90 = rotation[m][0], rotation[m][ANGLES.index(90)]
        print(f"{m:9s} 0°: LL {r0['log_lik']:.3f} err {r0['error']:.3f} ECE {r0['ece']:.3f}  90°: LL "
              f"{r90['log_lik']:.3f} err {r90['error']:.3f} ECE {r90['ece']:.3f}  OOD AUROC "
              + " ".join(f"{v:.3f}" for v in ood[m].values()) + f"  predict {1e3 * seconds[m]:.1f} ms")
    print("wall seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in wall.items()))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(validate.run_main(main))
