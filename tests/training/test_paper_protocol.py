"""The reference code's image protocol (arch_uncert), option by option: the learning-rate
schedule per method, the marginal stopping objective and the patience comparison, and that
`--paper` / `PAPER_IMAGE_PROTOCOL` select all three."""

import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from vdjax import fit
from vdjax.data.core import Dataset
from vdjax.nn.models import ModelConfig
from vdjax.training.config import IMAGE_PROTOCOL, PAPER_IMAGE_PROTOCOL, TrainConfig
from vdjax.training.objective import Objective, method_index

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))

MLP = ModelConfig("mlp", 1, 2, (2,), width=4)


def _softmax(a: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# ---------------------------------------------------------------------------- stopping objective


def test_marginal_objective_is_the_nll_of_the_q_marginal_predictive():
    """-mean_n log sum_d q(d) p(y_n|x_n,d) + KL(q||p)/N, by hand, against the 'expected'
    objective sum_d q(d) NLL_d + KL/N; for a DDN (q one-hot) the two are the same number."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 6, 4)).astype(np.float32) * 2  # [D+1, batch, classes]
    y = rng.integers(0, 4, 6)
    depth_logits = np.array([0.3, -1.0, 1.2], np.float32)
    n_train = 50
    q = _softmax(depth_logits.astype(np.float64))
    prior = 0.85 ** (1 + np.arange(3))
    prior /= prior.sum()
    kl = np.sum(q * np.log(q / prior))
    p_y = _softmax(logits.astype(np.float64))[:, np.arange(6), y]  # [D+1, batch]
    marginal = -np.mean(np.log(q @ p_y)) + kl / n_train
    expected = q @ -np.mean(np.log(p_y), axis=1) + kl / n_train
    assert marginal < expected - 1e-3  # Jensen: the options differ

    model = ModelConfig("mlp", 2, 4, (2,))  # D+1 = 3 depths, 4 classes
    params = {"model": {}, "depth_logits": depth_logits}

    def heldout(tc: TrainConfig, method: str) -> dict:
        """The held-out metrics of `method`, named statically and as the traced per-network
        index of a program of several methods: the same numbers."""
        objective = Objective(model, tc, n_train)
        named = objective.heldout(params, logits, y, method)
        indexed = jax.jit(lambda m: objective.heldout(params, logits, y, m))(method_index([method])[0])
        for key in named:
            assert float(indexed[key]) == pytest.approx(float(named[key]), rel=1e-6), key
        return named

    def loss(objective: str, method: str) -> float:
        return float(heldout(IMAGE_PROTOCOL.replace(stop_objective=objective), method)["loss"])

    assert loss("marginal", "ldn") == pytest.approx(marginal, rel=1e-6)
    assert loss("expected", "ldn") == pytest.approx(expected, rel=1e-6)
    ddn = -np.mean(np.log(p_y[-1]))
    assert loss("marginal", "ddn") == loss("expected", "ddn") == pytest.approx(ddn, rel=1e-6)
    ddn_marginal = heldout(PAPER_IMAGE_PROTOCOL, "ddn")
    assert -float(ddn_marginal["log_lik"]) == pytest.approx(ddn, rel=1e-6)


def test_marginal_objective_needs_a_held_out_split():
    with pytest.raises(ValueError, match="needs a held-out split"):
        TrainConfig(stop_objective="marginal")


# ---------------------------------------------------------------------------- learning rate per method


def _effective_lrs(train_config: TrainConfig, steps_per_epoch: int, epochs: int) -> np.ndarray:
    """[steps, networks] learning rate of an LDN and a DDN in one program of the host-fed image
    runner, read off each step's update: params_new - params_old = -lr * momentum trace."""
    from vdjax.training.feeds import _compiled_step
    from vdjax.training.runner import _compiled_init

    objective = Objective(MLP, train_config, 64)
    net = _compiled_init(objective, steps_per_epoch)(np.array([0, 1], np.uint32))
    step = _compiled_step(objective, steps_per_epoch, per_network_method=True)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, train_config.batch_size, 2)).astype(np.float32)
    y = rng.integers(0, 2, (2, train_config.batch_size))
    methods, done = method_index(["ldn", "ddn"]), np.array([False, False])
    leaf = lambda s: np.asarray(s.params["model"]["head"]["Linear_0"]["kernel"])  # noqa: E731
    lrs, train = [], net.train
    for _ in range(steps_per_epoch * epochs):
        before = leaf(train)
        train, _ = step(train, done, methods, x, y)
        trace = np.asarray(train.opt_state[0].trace["model"]["head"]["Linear_0"]["kernel"])
        ratio = (before - leaf(train)) / np.where(np.abs(trace) > 1e-4, trace, np.nan)
        lrs.append(np.nanmedian(ratio.reshape(2, -1), axis=1))
    return np.array(lrs)


def test_reference_schedule_drops_the_ddn_rate_only_in_one_program():
    """PAPER_IMAGE_PROTOCOL: the DDN (schedule=[30], `update_lr(i)` after 0-based epoch i) runs
    epochs 0-30 at 0.1 and 0.01 from epoch 31; the LDN (schedule=None) stays at 0.1, in the
    same vmapped program. With both methods dropping (vdjax's default), both drop."""
    tc = PAPER_IMAGE_PROTOCOL.replace(batch_size=8)
    lrs = _effective_lrs(tc, steps_per_epoch=2, epochs=33)  # epoch e is steps 2e, 2e+1
    np.testing.assert_allclose(lrs[: 2 * 31], 0.1, rtol=1e-3)
    np.testing.assert_allclose(lrs[2 * 31 :, 0], 0.1, rtol=1e-3)  # LDN
    np.testing.assert_allclose(lrs[2 * 31 :, 1], 0.01, rtol=1e-3)  # DDN
    both = _effective_lrs(tc.replace(lr_drop_methods=("ldn", "ddn")), steps_per_epoch=2, epochs=33)
    np.testing.assert_allclose(both[: 2 * 31], 0.1, rtol=1e-3)
    np.testing.assert_allclose(both[2 * 31 :], 0.01, rtol=1e-3)


def test_the_study_schedule_by_hand_ldn_constant_ddn_tenfold_lower_from_epoch_31_in_one_program():
    """`--study`'s schedule, read off every step of an LDN and a DDN trained in one vmapped
    program: the LDN's rate is 0.1 at every step of every epoch; the DDN's is 0.1 through 0-based
    epoch 30 (31 epochs, the reference's schedule=[30]) and 0.01 from epoch 31. Each epoch's rate
    is what the records store as `lr` (`TrainConfig.epoch_learning_rate`, `with_learning_rates`)."""
    import _images

    from vdjax.studies.image_runs import with_learning_rates

    tc = _images.PRESETS["study"].train_config()
    assert (tc.learning_rate, tc.lr_drop_epoch, tc.lr_drop_factor, tc.lr_drop_methods) == (0.1, 31, 0.1, ("ddn",))
    stated = _images.schedule_note(tc)  # what the study's summary says, as `lr_schedule`
    assert stated["ldn"] == "0.1 at every epoch (never dropped)"
    assert stated["ddn"] == "0.1 for epochs 0-30, 0.01 (x0.1) from epoch 31 on"
    assert "not at the same fraction (31/500) of a shorter epoch cap" in stated["note"]
    epochs, steps = 34, 2
    lrs = _effective_lrs(tc.replace(batch_size=8), steps_per_epoch=steps, epochs=epochs)
    per_epoch = lrs.reshape(epochs, steps, 2)  # [epoch, step of the epoch, network: LDN, DDN]
    np.testing.assert_allclose(per_epoch[..., 0], 0.1, rtol=1e-3)
    np.testing.assert_allclose(per_epoch[:31, :, 1], 0.1, rtol=1e-3)
    np.testing.assert_allclose(per_epoch[31:, :, 1], 0.01, rtol=1e-3)
    history = [{"epoch": e} for e in range(epochs)]
    for j, method in enumerate(("ldn", "ddn")):
        recorded = [h["lr"] for h in with_learning_rates(history, tc, method)]
        np.testing.assert_allclose(recorded, per_epoch[:, 0, j], rtol=1e-3)
        np.testing.assert_allclose(recorded, per_epoch[:, 1, j], rtol=1e-3)


def test_networks_with_their_own_schedules_match_single_runs():
    """An LDN and a DDN with different schedules trained as one program end where each one
    trained alone ends: the rate follows the network, not the program."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(96, 2)).astype(np.float32)
    y = (x[:, 0] * x[:, 1] > 0).astype(np.int64)
    data = Dataset("xor", x[:64], y[:64], x[64:], y[64:], 2)
    tc = PAPER_IMAGE_PROTOCOL.replace(batch_size=32, max_epochs=6, lr_drop_epoch=3, patience=100)
    members = [("ldn", 0), ("ddn", 1)]
    program = fit(MLP, tc, data, members)
    for i, member in enumerate(members):
        single = fit(MLP, tc, data, [member])
        assert [program.summary(i)[k] for k in ("epochs", "best_epoch")] == \
            [single.summary(0)[k] for k in ("epochs", "best_epoch")]
        for key in ("train_loss", "test_loss"):
            np.testing.assert_allclose([h[key] for h in program.histories[i]], [h[key] for h in single.histories[0]],
                                       rtol=1e-5)
    # The drop changed the DDN's course only: with no drop for anyone the LDN is unchanged.
    flat = fit(MLP, tc.replace(lr_drop_methods=()), data, members)
    np.testing.assert_allclose([h["test_loss"] for h in flat.histories[0]],
                               [h["test_loss"] for h in program.histories[0]], rtol=1e-5)
    assert [h["test_loss"] for h in flat.histories[1]][4:] != [h["test_loss"] for h in program.histories[1]][4:]


# ---------------------------------------------------------------------------- patience


def reference_stop(losses: list[float], early_stop: int) -> tuple[int, int]:
    """(epochs run, best epoch) of arch_uncert's `train_VI_classification` on a sequence of
    test losses (ELBO_test = -loss): strict improvement, stop when `i - best_epoch > early_stop`."""
    best_epoch, best = 0, -np.inf
    for i, loss in enumerate(losses):
        if -loss > best:
            best, best_epoch = -loss, i
        if i - best_epoch > early_stop:
            return i + 1, best_epoch
    return len(losses), best_epoch


def _trainer_stop(losses: list[float], train_config: TrainConfig) -> tuple[int, int]:
    """(epochs run, best epoch) of the runner's epoch-end update (`finish_epoch`, compiled for
    the host feed) fed `losses` as the stopping criterion. On a held-out split the criterion is
    computed from the held-out data; on the train ELBO it is the loss given, so the sequence is
    fed there: the patience update and its rule are the same in both regimes."""
    from vdjax.training.epoch import EpochData
    from vdjax.training.feeds import _compiled_finish
    from vdjax.training.runner import _compiled_init

    objective = Objective(MLP, train_config.replace(stop_on="train"), 1)
    net = _compiled_init(objective, 1)(np.array([0], np.uint32))
    finish = _compiled_finish(objective, False, False)
    for loss in losses:
        net, _ = finish(net, None, EpochData(), np.array([loss], np.float32))
    return int(net.epoch[0]), int(net.best_epoch[0])


LOSS_SEQUENCES = {
    "ties are no improvement": [5.0, 4.0, 4.0, 4.0, 4.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0],
    "late improvement": [5.0, 4.5, 4.7, 4.6, 4.4, 4.8, 4.9, 4.9, 4.45, 5.0, 5.0, 5.0],
    "never better than the first": [2.0, 3.0, 2.5, 2.0, 2.1, 2.2, 2.3, 2.4],
}


@pytest.mark.parametrize("losses", LOSS_SEQUENCES.values(), ids=LOSS_SEQUENCES.keys())
@pytest.mark.parametrize("patience", [2, 3])
def test_patience_rule_exceeded_stops_where_the_reference_stops(losses, patience):
    base = IMAGE_PROTOCOL.replace(max_epochs=len(losses), patience=patience)
    ref_epochs, ref_best = reference_stop(losses, patience)
    assert ref_epochs < len(losses), "each sequence must end by patience"
    assert _trainer_stop(losses, base.replace(patience_rule="exceeded")) == (ref_epochs, ref_best)
    # vdjax's own rule is the reference's with one epoch less patience: it stops sooner, and
    # misses the late improvement (epoch 4 of 'late improvement' at patience 2).
    own = _trainer_stop(losses, base)
    assert own == reference_stop(losses, patience - 1) and own[0] < ref_epochs


# ---------------------------------------------------------------------------- --paper


def test_paper_selects_the_reference_choices():
    import _images

    def train_config(*argv: str) -> TrainConfig:
        return _images.settings(_images.parser("", [1]).parse_args(list(argv)), [1])[3]

    paper = train_config("--paper")
    assert paper == PAPER_IMAGE_PROTOCOL
    assert (paper.lr_drop_methods, paper.lr_drop_epoch, paper.stop_on, paper.stop_objective, paper.patience,
            paper.patience_rule) == (("ddn",), 31, "test", "marginal", 30, "exceeded")
    own = train_config()  # vdjax's own choices stay as they were
    assert (own.lr_drop_methods, own.stop_objective, own.patience_rule) == (("ldn", "ddn"), "expected", "reached")
    # The CPU study: the reference's schedules and patience rule, vdjax's validation split and objective.
    study = train_config("--study")
    assert (study.lr_drop_methods, study.lr_drop_epoch, study.patience, study.patience_rule, study.stop_on,
            study.stop_objective, study.max_epochs) == (("ddn",), 31, 30, "exceeded", "val", "expected", 60)
    # Either choice under either preset.
    vdjax_choices = train_config("--paper", "--lr-drop-methods", "ddn", "ldn", "--lr-drop-epoch", "30",
                                 "--stop-objective", "expected", "--patience-rule", "reached")
    assert vdjax_choices == IMAGE_PROTOCOL.replace(stop_on="test")
    reference_choices = train_config("--lr-drop-methods", "ddn", "--stop-objective", "marginal",
                                     "--patience-rule", "exceeded", "--patience", "7")
    assert (reference_choices.lr_drop_methods, reference_choices.stop_objective, reference_choices.patience,
            reference_choices.patience_rule, reference_choices.stop_on) == (("ddn",), "marginal", 7, "exceeded", "val")
    assert train_config("--lr-drop-methods", "none").lr_drop_methods == ()
    # The output block's statistics: shared under --paper, per depth otherwise, either by flag.
    network = lambda *argv: _images.settings(_images.parser("", [1]).parse_args(list(argv)), [1])[6]  # noqa: E731
    head_norm = lambda *argv: network(*argv).head_norm  # noqa: E731
    assert (head_norm("--paper"), head_norm(), head_norm("--study")) == ("shared", "per_depth", "per_depth")
    assert (head_norm("--paper", "--head-norm", "per_depth"), head_norm("--head-norm", "shared")) == ("per_depth", "shared")
    # The CNN's size: the paper's unless a preset or the command line says otherwise.
    size = lambda *argv: (network(*argv).width, network(*argv).bottleneck)  # noqa: E731
    assert (size(), size("--paper"), size("--study"), size("--study", "--width", "32")) == (
        (None, None), (None, None), (16, 8), (32, 8))


def test_every_image_preset_opens_with_its_command_and_cost_and_the_help_lists_them():
    import _images

    for preset in _images.PRESETS.values():
        command, _, rest = preset.doc.partition(":")
        assert command.startswith("python3 experiments/scan_max_depth_images.py"), preset.name
        assert ("--" + preset.name in command) == (preset.name != "default")
        assert any(w in rest.split(".")[0] for w in ("minutes", "hour", "GPU work")), preset.name
        assert preset.doc in _images.CPU_HELP
    assert _images.PRESETS["paper"].train_config() == PAPER_IMAGE_PROTOCOL
