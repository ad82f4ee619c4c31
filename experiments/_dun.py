"""What the three DUN study scripts share: the method options, the protocol, the results file."""

from __future__ import annotations

import argparse
import dataclasses

from vdjax.cli import validate


@dataclasses.dataclass(frozen=True)
class DunPreset:
    """One DUN script's setting under --paper or its CPU default; the command line overrides any
    field that has an option of the same name. batch_size None: full batch. n_train/n_test None:
    the whole set."""

    doc: str  # opens with the run command and its cost
    max_depth: int
    width: int
    lr: float
    momentum: float
    batch_size: int | None
    max_epochs: int
    patience: int
    ensemble_size: int
    bottleneck: int | None = None
    n_train: int | None = None
    n_test: int | None = None


def settings(args, cpu: DunPreset, paper: DunPreset) -> DunPreset:
    """The preset the command line chose, with the options it gave."""
    chosen = paper if args.paper else cpu
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(DunPreset)
             if f.name != "doc" and getattr(args, f.name, None) is not None}
    return dataclasses.replace(chosen, **given)


def presets_help(cpu: DunPreset, paper: DunPreset) -> str:
    return f"\nDefault: {cpu.doc}\n\n--paper: {paper.doc}\n"

PROTOCOL_HELP = """
Methods (vdjax.baselines.dun): the LDN (uniform prior over depth, as DUN; predictions from the
network pruned to d_opt by the 95% rule, one forward pass; 'ldn_full' is the unpruned one), a
DDN of the same max depth, a deep ensemble of --ensemble-size DDNs (the DDN is member 0; the
members and the LDN train as one vmapped program) and MC dropout (the DDN with dropout
--dropout-rate on every residual branch, --samples forward passes at test time).
Every network gets the same protocol: SGD with momentum, the same learning rate, batch size
and epoch cap, early stopping once the ELBO (LDN) or NLL (the others) on a 10% validation
split of the training set has not improved for --patience epochs, keeping the best parameters.
Test-time cost: the wall time of each method's prediction on the test set, measured in the
same process after a compiling warm-up (median of 3).
"""


def parser(doc: str, default_out: str) -> argparse.ArgumentParser:
    p = validate.ArgumentParser(description=doc + PROTOCOL_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--paper", action="store_true", help="DUN's scale instead of the CPU-sized default (see above)")
    p.add_argument("--max-depth", type=validate.non_negative_int, default=None, help="LDN max depth = DDN depth")
    p.add_argument("--width", type=validate.positive_int, default=None, help="hidden width")
    p.add_argument("--max-epochs", type=validate.positive_int, default=None, help="epoch cap")
    p.add_argument("--patience", type=validate.positive_int, default=None, help="early-stopping patience (epochs)")
    p.add_argument("--lr", type=validate.finite_float, default=None, help="SGD learning rate")
    p.add_argument("--ensemble-size", type=validate.positive_int, default=None, help="deep-ensemble members")
    p.add_argument("--dropout-rate", type=validate.finite_float, default=0.1, help="MC dropout rate (default 0.1)")
    p.add_argument("--samples", type=validate.positive_int, default=10, help="MC dropout samples (default 10)")
    p.add_argument("--seed", type=validate.seed, default=0, help="first network seed (default 0)")
    p.add_argument("--out", type=validate.output_dir, default=f"results/{default_out}",
                   help=f"results directory (default results/{default_out}; created if missing)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def check_rates(args) -> None:
    if not 0.0 < args.dropout_rate < 1.0:
        raise validate.UserError(f"--dropout-rate must be in (0, 1), got {args.dropout_rate}")
    if args.lr is not None and args.lr <= 0:
        raise validate.UserError(f"--lr must be positive, got {args.lr}")
