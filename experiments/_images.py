"""What both image experiment scripts share: the command line, the CPU-sized default and the
paper-scale grid (--paper), and the loop over (data set, depth, seed)."""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

from vdjax.cli import validate


@dataclasses.dataclass(frozen=True)
class ImagePreset:
    """What an image script trains by default under one preset flag; every field can be
    overridden on the command line. `train` names a `TrainConfig` built by `train_config`."""

    name: str
    doc: str  # opens with the run command and its cost
    datasets: tuple[str, ...]
    depths: tuple[int, ...] | None  # None: the script's own CPU depths
    seeds: tuple[int, ...]
    n_train: int | None  # None: the whole training set
    n_test: int | None
    train: dict  # changes to vdjax.IMAGE_PROTOCOL, or {"paper": True} for PAPER_IMAGE_PROTOCOL
    head_norm: str = "per_depth"
    out: str = "results/images"
    width: int | None = None  # the CNN's outer / inner channels (None: the paper's 64 / 32)
    bottleneck: int | None = None
    ablation: tuple["Ablation", ...] = ()
    summary_copy: str | None = None  # where (from the repository root) a complete study's summary also goes

    def train_config(self):
        from vdjax.training.config import IMAGE_PROTOCOL, PAPER_IMAGE_PROTOCOL

        return PAPER_IMAGE_PROTOCOL if self.train.get("paper") else IMAGE_PROTOCOL.replace(**self.train)


@dataclasses.dataclass(frozen=True)
class Ablation:
    """One variant of a study: its networks at `depth` (every seed of the study) with one choice
    changed, written to <out>/ablation/<name>. `methods`: the networks the change can affect."""

    name: str
    depth: int
    methods: tuple[str, ...]
    head_norm: str | None = None
    train: dict = dataclasses.field(default_factory=dict)

    @property
    def network(self) -> dict:
        """The change to `run_image_points`' `ImageModel` (head_norm), if any."""
        return {"head_norm": self.head_norm} if self.head_norm else {}

    @property
    def changes(self) -> dict:
        return {**self.network, **self.train}


PRESETS = {p.name: p for p in (
    ImagePreset("default", """\
python3 experiments/scan_max_depth_images.py: about ten minutes on 2 CPU cores. A smoke run:
Fashion-MNIST, a seeded subset of 1024 train and 1000 test images, batch 128, 8 epochs with the
learning rate dropped 10x after epoch 5, one seed (its q(d) does not leave uniform).""",
                datasets=("fashion_mnist",), depths=None, seeds=(0,), n_train=1024, n_test=1000,
                train={"batch_size": 128, "max_epochs": 8, "lr_drop_epoch": 5}),
    ImagePreset("study", """\
python3 experiments/scan_max_depth_images.py --study: about three hours on 2 idle CPU cores
(into results/images_study4, and its summary.json also into docs/data/images_study/ once every
network is trained; --summarize-only --study writes summary.json and the figures again).
Fashion-MNIST: a seeded subset of 12,000 training images, of which 25% (3,000) is the stratified
validation split that early stopping watches, and the full 10,000-image test set; max depths 5,
10 and 20, an LDN and a DDN at each, seeds 0-3 (the paper's 4 repeats). The paper's CNN at a
quarter of its width (channels 16 outer / 8 bottleneck instead of 64 / 32: at full width one step
at D = 20 costs about 0.8 s here), batch 64 instead of 512 (more SGD steps in the time), SGD lr 0.1
and momentum 0.5 as the paper, at most 60 epochs (8,460 steps). The reference code's schedules:
the LDNs' learning rate never drops (schedule=None); the DDNs' drops 10x after 0-based epoch 30
(schedule=[30]: 31 epochs at 0.1, 0.01 from epoch 31), the reference's epoch itself, not a
fraction of the shorter cap. Patience 30 as the reference counts it (stop once more than 30
epochs passed without a better validation ELBO), so every DDN reaches its drop. No ablation:
the 2-seed ablation of the earlier study (30 epochs, both rates dropped after 15) is in git
history.""",
                datasets=("fashion_mnist",), depths=(5, 10, 20), seeds=(0, 1, 2, 3), n_train=12000, n_test=None,
                train={"batch_size": 64, "max_epochs": 60, "patience": 30, "patience_rule": "exceeded",
                       "lr_drop_epoch": 31, "lr_drop_methods": ("ddn",), "val_fraction": 0.25},
                out="results/images_study4", width=16, bottleneck=8,
                summary_copy="docs/data/images_study/summary.json"),
    ImagePreset("paper", """\
python3 experiments/scan_max_depth_images.py --paper: GPU work (benchmarks/RESULTS.md estimates
it). The paper's setting as its reference code (arch_uncert) runs it: MNIST, Fashion-MNIST and
SVHN in full, batch 512, up to 500 epochs, 4 repeats, depths 0,5,...,50,60,...,100; early
stopping on the test ELBO of the q-marginal predictive once more than 30 epochs passed without
a better one; the DDNs' learning rate dropped 10x after 31 epochs, the LDNs' never; one set of
output-block BatchNorm statistics shared by every depth.""",
                datasets=("mnist", "fashion_mnist", "svhn"), depths=(*range(0, 51, 5), *range(60, 101, 10)),
                seeds=(0, 1, 2, 3), n_train=None, n_test=None, train={"paper": True}, head_norm="shared"),
)}
SCHEDULE_NOTE = ("the reference code's schedules (arch_uncert): LDNs schedule=None; DDNs schedule=[30] with "
                 "update_lr(i, 0.1) after 0-based epoch i, i.e. 31 epochs at 0.1. The DDN's drop stays at the "
                 "reference's epoch, not at the same fraction (31/500) of a shorter epoch cap.")
STUDY_SEEDS = list(PRESETS["study"].seeds)  # a process may train some of them: the study needs all

CPU_HELP = "\n\nPresets:\n" + "\n\n".join(p.doc for p in PRESETS.values()) + """

Early stopping (and the kept parameters) watch the ELBO of a seeded, class-stratified
validation split held out of the training set (--val-fraction, default 10%), so the test set
is only used for the report. --paper stops on the test ELBO as the paper did (which flatters
the test numbers); --stop-on overrides either. Each difference between the reference's
protocol and the default is an option, to run either choice under any preset:
  --lr-drop-methods   whose learning rate drops after --lr-drop-epoch epochs: ldn ddn (the
                      default), ddn (--paper and --study: the reference's schedule=[30]
                      for DDNs, after 31 epochs, and schedule=None for LDNs) or none
  --stop-objective    the held-out ELBO's NLL: expected, sum_d q(d) NLL_d (default), or
                      marginal, -log sum_d q(d) p(y|x,d) of the predictive (--paper, the
                      reference's test_ELBO); the same for a DDN
  --patience-rule     stop once the epochs since the best one reached --patience (default) or
                      exceeded it (--paper and --study: the reference's epoch - best_epoch > 30)
  --head-norm         the output block's BatchNorm running statistics: per_depth, one set per
                      depth (default), or shared, one set for all depths updated D+1 times a
                      step (--paper: the reference's single output module)

Data: the original files in --data-dir (or ~/.vdjax/data/<name>, $VDJAX_DATA/<name>, and for
Fashion-MNIST /usr/share/datasets/fashion-mnist from Debian's dataset-fashion-mnist), else
TFDS. Each network writes <out>/<data set>/<method>_D<depth>_s<seed>.json (+ .msgpack); a
finished one is skipped on rerun and a killed one resumes from its last epoch's checkpoint
(rerun the same command: a checkpoint is only resumed under the settings that wrote it). Each
epoch's learning rate is in the record's history (`lr`).
"""



def parser(doc: str, cpu_depths: list[int]) -> argparse.ArgumentParser:
    p = validate.ArgumentParser(description=doc + CPU_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)  # study_command reads the options by their full names
    preset = p.add_mutually_exclusive_group()
    preset.add_argument("--paper", action="store_true", help="the paper's full grid, data and protocol (GPU work)")
    preset.add_argument("--study", action="store_true", help="the CPU image study (see above)")
    p.add_argument("--datasets", nargs="+", default=None,
                   help="mnist, fashion_mnist, svhn (default: fashion_mnist; --paper: all three)")
    p.add_argument("--depths", type=validate.non_negative_int, nargs="+", default=None,
                   help=f"depths to train (default {cpu_depths}; --paper: {list(PRESETS['paper'].depths)})")
    p.add_argument("--seeds", type=validate.seed, nargs="+", default=None,
                   help="seeds (default 0; --paper and --study: 0 1 2 3)")
    p.add_argument("--n-train", type=validate.positive_int, default=None,
                   help="train subset size (default 1024; --paper: all)")
    p.add_argument("--n-test", type=validate.positive_int, default=None,
                   help="test subset size (default 1000; --paper: all)")
    p.add_argument("--max-epochs", type=validate.positive_int, default=None,
                   help="default 8; --study: 60; --paper: 500")
    p.add_argument("--batch-size", type=validate.positive_int, default=None, help="default 128; --paper: 512")
    p.add_argument("--width", type=validate.positive_int, default=None,
                   help="the CNN's outer channels (default and --paper: 64, the paper's; --study: 16)")
    p.add_argument("--bottleneck", type=validate.positive_int, default=None,
                   help="the CNN's bottleneck channels (default and --paper: 32; --study: 8)")
    p.add_argument("--data-dir", type=validate.existing_dir, default=None,
                   help="directory with the original data files")
    p.add_argument("--source", choices=["auto", "files", "tfds"], default="auto", help="where to read the data")
    p.add_argument("--stop-on", choices=["val", "test", "train"], default=None,
                   help="early-stopping objective: validation ELBO (default), test ELBO (--paper) or train ELBO")
    p.add_argument("--val-fraction", type=validate.finite_float, default=None,
                   help="validation split held out of the training set for --stop-on val (default 0.1)")
    p.add_argument("--stop-objective", choices=["expected", "marginal"], default=None,
                   help="NLL of the held-out ELBO: of each depth, weighted by q (default), or of the "
                        "q-marginal predictive (--paper); see above")
    p.add_argument("--patience", type=validate.positive_int, default=None,
                   help="epochs without a better stopping objective (default and --study: 30)")
    p.add_argument("--patience-rule", choices=["reached", "exceeded"], default=None,
                   help="stop when the epochs since the best one reach --patience (default) or exceed it "
                        "(--paper and --study)")
    p.add_argument("--head-norm", choices=["per_depth", "shared"], default=None,
                   help="running statistics of the output block's BatchNorm: one set per depth (default) or "
                        "one shared by every depth and updated once per depth per step (--paper)")
    p.add_argument("--lr-drop-epoch", type=validate.positive_int, default=None,
                   help="epochs before the learning rate drops 10x (default 5; --study and --paper: 31, DDNs only)")
    p.add_argument("--lr-drop-methods", choices=["ldn", "ddn", "none"], nargs="+", default=None,
                   help="methods whose learning rate drops: ldn ddn (default), ddn (--paper and --study) or none")
    p.add_argument("--out", type=validate.output_dir, default=None,
                   help="results directory, shared by both image scripts (DDNs are reused); default "
                        "results/images (--study: results/images_study4)")
    p.add_argument("--networks-per-program", type=validate.positive_int, default=None,
                   help="networks of one max depth (seeds x methods) trained together as one vmapped program "
                        "(default: all of them)")
    p.add_argument("--mesh", default=None, metavar="nets=N,data=M",
                   help="device mesh of each program: its networks sharded over N devices, each network's "
                        "batch over M (data parallel). Default: networks over as many devices as divide their "
                        "number (on CPU, one device per core), data=1. The devices are this process's, or with "
                        "--span-processes every process's")
    hosts = p.add_argument_group("several processes or hosts: each trains its share of the programs into "
                                 "the shared --out (a finished network is skipped, a killed one resumes), or "
                                 "with --span-processes all train every program together")
    hosts.add_argument("--distributed", action="store_true",
                       help="start jax.distributed, auto-detected (Slurm, Open MPI, TPU VMs)")
    hosts.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                       help="start jax.distributed with this coordinator (with --num-processes, --process-index)")
    hosts.add_argument("--num-processes", type=validate.positive_int, default=None, help="processes sharing the grid")
    hosts.add_argument("--process-index", type=validate.non_negative_int, default=None, help="this process's index, from 0")
    hosts.add_argument("--span-processes", action="store_true",
                       help="with --distributed or --coordinator: run each program as one program sharded over "
                            "every process's devices (--mesh counts all of them; 'nets' crosses hosts first) "
                            "instead of splitting the grid; process 0 writes the results, and checkpoints need "
                            "an --out that every host shares")
    p.add_argument("--summarize-only", action="store_true",
                   help="with --study and the training run's settings: train nothing; write summary.json and "
                        "the figures from the networks finished so far (marked partial if some are missing)")
    p.add_argument("--retime", action="store_true",
                   help="train nothing; time every finished LDN's pruned forward pass against its DDN again "
                        "from their saved parameters, rewrite those records and redraw the figures (and, with "
                        "--study and the training run's settings, the summary): for timings first taken while "
                        "other work shared the cores")
    p.add_argument("--no-progress", action="store_true", help="no per-epoch progress bars")
    p.add_argument("--metrics-dir", type=validate.output_dir, default=None,
                   help="stream every network's per-epoch metrics while training: metrics.jsonl there, and "
                        "TensorBoard event files where tensorboardX or torch is installed")
    return p


def preset(args) -> ImagePreset:
    return PRESETS["paper" if args.paper else "study" if args.study else "default"]


def settings(args, cpu_depths: list[int]):
    """(datasets, depths, seeds, train_config, subset sizes, network options) from the command
    line: the chosen preset, with what the command line overrides. The network options are
    `run_image_points`' `ImageModel`."""
    chosen = preset(args)
    datasets, seeds, n_train, n_test = list(chosen.datasets), list(chosen.seeds), chosen.n_train, chosen.n_test
    depths = list(chosen.depths) if chosen.depths is not None else cpu_depths
    train = chosen.train_config()
    overrides = (("max_epochs", args.max_epochs), ("batch_size", args.batch_size), ("stop_on", args.stop_on),
                 ("val_fraction", args.val_fraction), ("stop_objective", args.stop_objective),
                 ("patience", args.patience), ("patience_rule", args.patience_rule),
                 ("lr_drop_epoch", args.lr_drop_epoch), ("lr_drop_methods", lr_drop_methods(args.lr_drop_methods)))
    train = train.replace(**{k: v for k, v in overrides if v is not None})  # TrainConfig rejects bad mixes
    from vdjax.studies.image_runs import ImageModel

    network = ImageModel(args.head_norm or chosen.head_norm, args.width or chosen.width,
                         args.bottleneck or chosen.bottleneck)
    return (args.datasets or datasets, args.depths or depths, args.seeds or seeds, train,
            args.n_train or n_train, args.n_test or n_test, network)


def lr_drop_methods(names: list[str] | None) -> tuple[str, ...] | None:
    """--lr-drop-methods as `TrainConfig.lr_drop_methods` ('none' alone: no method's rate drops)."""
    if names is None:
        return None
    if "none" in names and len(names) > 1:
        raise validate.UserError(f"argument --lr-drop-methods: 'none' goes alone, got {' '.join(names)}")
    return tuple(sorted(set(names) - {"none"}, key=["ldn", "ddn"].index))


def run(doc: str, cpu_depths: list[int], methods, argv=None):
    """Trains methods(depth) for every (data set, depth, seed), then draws every figure it can."""
    args = parser(doc, cpu_depths).parse_args(argv)
    from vdjax.runtime import parse_mesh, process_share, start_script

    start_script()  # before JAX starts: on CPU, networks of a program run on every core
    mesh = parse_mesh(args.mesh) if args.mesh else None
    from vdjax.data.images import check_available, load_images
    from vdjax.studies.image_runs import ImagePoint, image_figures, retime_speedups, run_image_points
    from vdjax.training.config import RunOptions
    from vdjax.training.runner import with_stopping_data

    datasets, depths, seeds, train, n_train, n_test, network = settings(args, cpu_depths)
    validate.unique(seeds, "--seeds")
    out = args.out or validate.output_dir(preset(args).out)
    for name in datasets:  # every data set is there before the first network trains
        check_available(name, args.data_dir, args.source)
    share, shares = process_share(args.num_processes, args.process_index, args.coordinator, args.distributed,
                                  span=args.span_processes)
    import jax

    primary = not args.span_processes or jax.process_index() == 0  # writes results and draws figures
    start = time.perf_counter()
    if args.summarize_only:
        if not args.study:
            raise validate.UserError("--summarize-only summarises the --study study: add --study")
        summarize_study(out, datasets[0], depths, sorted(set(seeds) | set(STUDY_SEEDS)), methods,
                        study_about(train, argv), partial=True, copy_to=summary_copy(args, cpu_depths, out))
        return []
    for name in datasets:
        data = load_images(name, args.data_dir, source=args.source, n_train=n_train, n_test=n_test)
        if args.retime:
            print(f"{data.name}: retimed {len(retime_speedups(out, data))} LDNs under {out}")
            continue
        data = with_stopping_data(data, train)
        print(f"{data.name}: {data.n_train} train / {data.n_val} validation / {len(data.x_test)} test images "
              f"{data.input_shape}, depths {depths}, seeds {seeds}, batch {train.batch_size}, up to "
              f"{train.max_epochs} epochs, early stopping on the {train.stop_on} ELBO ({train.stop_objective} NLL, "
              f"patience {train.patience} {train.patience_rule}), learning rate of "
              f"{'; '.join(f'{k.upper()}s {v}' for k, v in schedule_note(train).items() if k != 'note')}, "
              f"head statistics "
              f"{network.head_norm}, CNN "
              f"width {network.width or 64} / {network.bottleneck or 32}")
        programs = []
        for depth in depths:
            points = [ImagePoint(method, depth, seed) for seed in seeds for method in methods(depth)]
            size = args.networks_per_program or len(points)
            programs += [(points[i : i + size], out, train, network) for i in range(0, len(points), size)]
        if args.study:  # the ablation: its variants' networks after the study's own
            for variant in preset(args).ablation:
                points = [ImagePoint(m, variant.depth, s) for s in seeds for m in variant.methods]
                programs.append((points, out / "ablation" / variant.name, train.replace(**variant.train),
                                 dataclasses.replace(network, **variant.network)))
        from vdjax.training.metrics_writer import create_writer

        writer = create_writer(args.metrics_dir) if args.metrics_dir is not None and primary else None
        try:
            for group, group_out, group_train, group_network in programs[share::shares]:  # this process's share
                options = RunOptions(progress=not args.no_progress and primary, mesh=mesh,
                                     span_processes=args.span_processes, metrics_writer=writer)
                run_image_points(data, group, group_train, group_out, group_network, options)
        finally:
            if writer is not None:
                writer.close()
    if not primary:
        return []
    paths = image_figures(out, datasets)
    print(f"done in {time.perf_counter() - start:.0f} s; figures: " + ", ".join(str(p) for p in paths))
    if args.study:
        summarize_study(out, datasets[0], depths, sorted(set(seeds) | set(STUDY_SEEDS)), methods,
                        study_about(train, argv), partial=args.retime,
                        copy_to=summary_copy(args, cpu_depths, out))
    return paths


def schedule_note(train) -> dict[str, str]:
    """Each method's learning-rate schedule under `train`, in words (0-based epochs, as the
    records' history counts them), as the study's summary states it; with a `note` on where the
    DDN's drop comes from when it is the reference's (DDNs only, after 31 epochs)."""
    out = {}
    for method in ("ldn", "ddn"):
        lr = train.learning_rate
        if not train.drops_lr(method):
            out[method] = f"{lr:g} at every epoch (never dropped)"
        else:
            e = train.lr_drop_epoch
            out[method] = (f"{lr:g} for epochs 0-{e - 1}, {train.epoch_learning_rate(e, method):g} "
                           f"(x{train.lr_drop_factor:g}) from epoch {e} on")
    if (train.lr_drop_epoch, train.lr_drop_methods) == (31, ("ddn",)):
        out["note"] = SCHEDULE_NOTE
    return out


def summary_copy(args, cpu_depths: list[int], out: Path) -> Path | None:
    """Where a complete study's summary also goes (the preset's `summary_copy`, from the
    repository root): only for --study run as the preset defines it, into its own --out (any
    subset of its seeds, since a process may train some of them); None for any other run."""
    chosen = preset(args)
    if not args.study or chosen.summary_copy is None or Path(out).resolve() != Path(chosen.out).resolve():
        return None
    mine, own = settings(args, cpu_depths), settings(parser("", cpu_depths).parse_args(["--study"]), cpu_depths)
    if mine[:2] != own[:2] or mine[3:] != own[3:]:  # everything but the seeds
        return None
    return Path(__file__).resolve().parents[1] / chosen.summary_copy


def study_about(train, argv: list[str] | None) -> dict[str, Any]:
    """The summary's `lr_schedule` and `command` for a study trained with `train` from `argv`."""
    return {"lr_schedule": schedule_note(train), "command": study_command(argv)}


# Options that change where or how a run goes, not its results, and how many values each takes.
RUN_ONLY = {"--summarize-only": 0, "--retime": 0, "--no-progress": 0, "--debug": 0, "--data-dir": 1, "--metrics-dir": 1,
            "--networks-per-program": 1, "--mesh": 1, "--distributed": 0, "--span-processes": 0,
            "--coordinator": 1, "--num-processes": 1, "--process-index": 1}


def study_command(argv: list[str] | None = None) -> str:
    """The command that trains the study with the settings of `argv` (default: this process's):
    its options less `RUN_ONLY`. A --summarize-only or --retime call given the training run's
    settings, as their help asks, records the same command as that run."""
    import shlex
    import sys

    argv = sys.argv[1:] if argv is None else argv
    kept, skip = [], 0
    for token in argv:
        if skip:
            skip -= 1
            continue
        name = token.split("=", 1)[0]
        if name in RUN_ONLY:
            skip = 0 if "=" in token else RUN_ONLY[name]
            continue
        kept.append(token)
    return " ".join(["python3 experiments/scan_max_depth_images.py", *map(shlex.quote, kept)])


def summarize_study(out: Path, dataset: str, depths: list[int], seeds: list[int], methods,
                    about: dict[str, Any], partial: bool = False, copy_to: Path | None = None) -> None:
    """Once every network of the study and its ablation is trained (by this process or another),
    write <out>/summary.json with the study's figures, and, when complete, the summary to
    `copy_to` too (where it is committed). `partial`: do it now with the networks finished so
    far, listing the missing ones in the summary. `about`: what the summary says of its run
    (`study_about`: the learning-rate schedule in words and the command)."""
    from vdjax.studies.image_runs import ImagePoint, load_records, record_path
    from vdjax.studies.image_study import findings, summarize, write_study

    variants = PRESETS["study"].ablation
    wanted = [(out, ImagePoint(m, d, s)) for d in depths for s in seeds for m in methods(d)]
    wanted += [(out / "ablation" / v.name, ImagePoint(m, v.depth, s)) for v in variants for s in seeds for m in v.methods]
    missing = [str(record_path(o, dataset, p).relative_to(out).with_suffix(""))
               for o, p in wanted if not record_path(o, dataset, p).exists()]
    if missing and not partial:
        print(f"study not complete yet ({len(missing)} networks to go, e.g. {missing[0]}): "
              "summary.json is written by the run that finishes the last one")
        return
    ablation = {v.name: {"changes": v.changes, "records": load_records(out / "ablation" / v.name, dataset)}
                for v in variants}
    summary = summarize(load_records(out, dataset), None, ablation, dataset=dataset, depths=depths, seeds=seeds,
                        complete=not missing, missing=missing, **about)
    paths = write_study(summary, out)
    if copy_to is not None and not missing:
        from vdjax.io import write_json

        paths.append(write_json(copy_to, summary))
    f = findings(summary)
    print(f"d_opt over D: {f['d_opt_range_over_D']}; stopped: {f['stopped']}; LDNs below the bar: "
          f"{', '.join(f['unsettled']) or 'none'}; wrote " + ", ".join(str(p) for p in paths))
