"""What a run is told: the protocol (`TrainConfig` and its presets) and how to run it (`RunOptions`).

`TrainConfig.stop_on` is the regime: 'train' stops on the train ELBO (the paper's spirals
protocol), 'val' and 'test' on the ELBO of a held-out split (the images). Everything else about
an epoch is the same in both (`vdjax.training.epoch`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

import numpy as np

Method = Literal["ldn", "ddn"]
StopOn = Literal["train", "val", "test"]
StopObjective = Literal["expected", "marginal"]
PatienceRule = Literal["reached", "exceeded"]


def patience_spent(since_best, patience: int, rule: PatienceRule):
    """Whether `since_best` epochs without a strict improvement end the run under `rule` (ints or
    arrays alike: the jitted epoch and the study's tables ask the same question)."""
    return since_best >= patience if rule == "reached" else since_best > patience


METHOD_NAMES: tuple[Method, ...] = ("ldn", "ddn")  # `vdjax.training.objective` defines each
MAX_SEED = 2**32 - 1  # seeds become uint32 PRNG keys: a larger one would silently wrap around


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation and protocol; defaults are the paper's spirals protocol.

    lr_drop_epoch: epochs run at `learning_rate` before it is multiplied by `lr_drop_factor`
    (the 0-based epoch `lr_drop_epoch` is the first at the lower rate; `epoch_learning_rate`);
    None keeps it fixed (spirals).
    lr_drop_methods: the methods whose learning rate drops; the others keep theirs. The
    reference code drops it for DDNs only (`schedule=[30]`; LDNs `schedule=None`). Networks of
    different methods trained in one program each get their own method's rate.
    stop_on: the objective that early stopping (and keep-best) watches: the train ELBO (the
    spirals protocol), the ELBO on a validation split of `val_fraction` held out of the
    training set (the default for images), or the test ELBO (the paper's image protocol,
    which flatters the test numbers it then reports).
    stop_objective: which held-out NLL enters that ELBO: 'expected', sum_d q(d) NLL_d (the
    training objective's, a true lower bound), or 'marginal', the NLL of the q-marginal
    predictive -mean log sum_d q(d) p(y|x,d) (the reference's `test_ELBO`). Both add KL/N, and
    coincide for a DDN (q one-hot). Held-out stopping only: the train ELBO is the training loss.
    patience_rule: stop once the epochs since the best one have 'reached' `patience`, or once
    they have 'exceeded' it (the reference's `epoch - best_epoch > early_stop`, one epoch later).
    """

    method: Method = "ldn"
    learning_rate: float = 0.1
    momentum: float = 0.5
    batch_size: int = 512
    max_epochs: int = 8000
    patience: int = 500
    prior_decay: float = 0.85
    lr_drop_epoch: int | None = None
    lr_drop_factor: float = 0.1
    lr_drop_methods: tuple[Method, ...] = METHOD_NAMES
    stop_on: StopOn = "train"
    stop_objective: StopObjective = "expected"
    patience_rule: PatienceRule = "reached"
    val_fraction: float = 0.1

    def __post_init__(self):
        if self.method not in METHOD_NAMES:
            raise ValueError(f"method must be one of {METHOD_NAMES}, got {self.method!r}")
        for name in ("learning_rate", "batch_size", "max_epochs", "patience"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.stop_on not in ("train", "val", "test"):
            raise ValueError(f"stop_on must be 'train', 'val' or 'test', got {self.stop_on!r}")
        if not isinstance(self.lr_drop_methods, tuple) or not set(self.lr_drop_methods) <= set(METHOD_NAMES):
            raise ValueError(f"lr_drop_methods must be a tuple of {METHOD_NAMES}, got {self.lr_drop_methods!r}")
        if self.stop_objective not in ("expected", "marginal"):
            raise ValueError(f"stop_objective must be 'expected' or 'marginal', got {self.stop_objective!r}")
        if self.stop_objective == "marginal" and self.stop_on == "train":
            raise ValueError("stop_objective 'marginal' needs a held-out split to stop on (stop_on 'val' or "
                             "'test'): the train ELBO is the training loss, an expected NLL")
        if self.patience_rule not in ("reached", "exceeded"):
            raise ValueError(f"patience_rule must be 'reached' or 'exceeded', got {self.patience_rule!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if not 0.0 < self.prior_decay <= 1.0:
            raise ValueError(f"prior_decay must be in (0, 1], got {self.prior_decay}")

    def drops_lr(self, method: Method | None = None) -> bool:
        """Whether the learning rate of a `method` network (default `self.method`) ever drops."""
        return self.lr_drop_epoch is not None and (method or self.method) in self.lr_drop_methods

    def epoch_learning_rate(self, epoch: int, method: Method | None = None) -> float:
        """The learning rate every SGD step of the 0-based `epoch` of a `method` network (default
        `self.method`) takes: `learning_rate`, times `lr_drop_factor` from epoch `lr_drop_epoch` on
        where that method's rate drops (`vdjax.training.step.learning_rate` is the same schedule
        counted in steps). What the image records store per epoch as `lr`."""
        if self.drops_lr(method) and epoch >= self.lr_drop_epoch:
            return float(f"{self.learning_rate * self.lr_drop_factor:.12g}")  # 0.01, not 0.010000000000000002
        return float(self.learning_rate)

    @property
    def held_out(self) -> bool:
        """Whether early stopping watches a held-out split (the image regime) or the train ELBO."""
        return self.stop_on != "train"

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


SPIRALS_PROTOCOL = TrainConfig()
"""The paper's spirals protocol: SGD 0.1 / momentum 0.5, batch 512 (full batch at 200 points),
at most 8000 epochs, stop after 500 without a better train ELBO, keep the best."""

IMAGE_PROTOCOL = TrainConfig(
    batch_size=512, learning_rate=0.1, momentum=0.5, max_epochs=500, patience=30, lr_drop_epoch=30,
    lr_drop_factor=0.1, stop_on="val", val_fraction=0.1,
)
"""The paper's image optimisation, with early stopping on a 10% validation split. The drop
factor was lost from the paper's text; 0.1 is assumed."""

PAPER_IMAGE_PROTOCOL = IMAGE_PROTOCOL.replace(
    stop_on="test", stop_objective="marginal", patience_rule="exceeded", lr_drop_epoch=31, lr_drop_methods=("ddn",),
)
"""The paper's image protocol as its reference code runs it (arch_uncert `train_BNN.py`,
`scan_*_depth_images.py`): early stopping on the test ELBO of the q-marginal predictive
(`stop_criteria='test_ELBO'`), stopping once more than 30 epochs passed without a better one
(`i - best_epoch > 30`); the DDN's learning rate drops 10x after its 0-based epoch 30
(`schedule=[30]`, `update_lr(i)` after epoch i: 31 epochs at 0.1), the LDN's never
(`schedule=None`)."""

Batches = Callable[[int, np.ndarray], Iterable[tuple[np.ndarray, np.ndarray]]]


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How one call of `vdjax.fit` runs, apart from what it computes.

    checkpoint_dir: save the state there between chunks and resume from it (a checkpoint of
    another run is refused with `CheckpointError`); the caller deletes it once results are safe.
    checkpoint_every_s: at most this often (and with at most 5% of the time spent saving); 0
    saves after every chunk; None: 60 s on the train ELBO, every chunk on a held-out split.
    The state is always saved when the call stops early.
    chunk_epochs: epochs per compiled call (the host wakes between chunks for progress, saves
    and the time budget); None: 250 on the train ELBO, 1 on a held-out split. Part of what sets
    the vmapped batch, so of the floats: a checkpoint records it.
    stop_after_epochs / stop_after_seconds: stop early as if killed (networks still running are
    'interrupted'), after saving. The time budget counts compiling and stops before a chunk that,
    taking as long as the last one, would end past it; the first chunk always runs.
    mesh: {'nets': N, 'data': M}: the networks sharded over N devices and each network's batch
    over M (held-out regime). Default: nets = the most devices that divide the number of
    networks, data = 1.
    span_processes: one program over every process's devices (`jax.distributed` started; every
    process calls `fit` with the same arguments and gets the same result).
    metrics_writer: scalars while the run trains (`vdjax.training.metrics_writer`).
    progress: a tqdm bar (True), none (False), or `progress(epochs_done, max_epochs)`.
    log: where one-line messages (resuming) go.
    feed: 'device' (the data on the device, an epoch one compiled call) or 'host' (batches fed
    one step at a time, for data that does not fit: `batches(epoch, active)` yields [K, B, ...]
    inputs and [K, B] labels of the networks `active`; by default drawn from numpy with (seed,
    epoch)). `batches` implies 'host'. Held-out regime only.
    """

    checkpoint_dir: str | Path | None = None
    checkpoint_every_s: float | None = None
    chunk_epochs: int | None = None
    stop_after_epochs: int | None = None
    stop_after_seconds: float | None = None
    mesh: dict[str, int | None] | None = None
    span_processes: bool = False
    metrics_writer: Any = None
    progress: bool | Callable[[int, int], None] = False
    log: Callable[[str], None] = print
    feed: Literal["device", "host"] = "device"
    batches: Batches | None = None

    def __post_init__(self):
        if self.feed not in ("device", "host"):
            raise ValueError(f"feed must be 'device' or 'host', got {self.feed!r}")
        if self.chunk_epochs is not None and self.chunk_epochs < 1:
            raise ValueError(f"chunk_epochs must be positive, got {self.chunk_epochs}")

    @property
    def host_fed(self) -> bool:
        return self.feed == "host" or self.batches is not None

    def chunk(self, config: TrainConfig) -> int:
        return self.chunk_epochs or (1 if config.held_out else 250)

    def save_every_s(self, config: TrainConfig) -> float:
        return self.checkpoint_every_s if self.checkpoint_every_s is not None else (0.0 if config.held_out else 60.0)

    def replace(self, **changes) -> "RunOptions":
        return dataclasses.replace(self, **changes)
