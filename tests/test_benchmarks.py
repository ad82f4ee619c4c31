"""The benchmark's quick mode runs here so the script cannot rot; no timing is asserted."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.mark.one_stack
def test_compare_quick_mode_fills_every_table(tmp_path):
    import compare

    res = compare.main(["--quick", "--out", str(tmp_path)])
    assert [r["max_depth"] for r in res["cnn"]] == [2, 4]
    assert all(r["vdjax_step_s"] > 0 and r["vdjax_compile_s"] > 0 for r in res["cnn"])
    assert res["spirals"]["vdjax_epochs"] == [30]
    # Equal work: with patience >= epochs no seed stops early, in either framework.
    fixed = res["spirals_fixed_epochs"]
    assert [r["seeds"] for r in fixed] == [1] and [r["vdjax_epochs"] for r in fixed] == [[30]]
    assert all(r.get("torch_epochs", r["vdjax_epochs"]) == r["vdjax_epochs"] for r in fixed)
    assert res["pruned"]["ideal_ratio"] == pytest.approx(2 / 5)
    # The main job run twice: the second finds the first's programs in the compilation cache.
    assert res["rerun"]["cache_files"] > 0 and res["rerun"]["second_s"] > 0
    table = (tmp_path / "table.md").read_text()
    assert "### Pruned inference" in table and "Equal work" in table and "second / first" in table


def _torch():
    if os.environ.get("VDJAX_REQUIRE_TORCH") == "1":  # CI installs it: a missing torch fails there
        import torch
        return torch
    return pytest.importorskip("torch")


def test_torch_peer_computes_the_same_loss_as_vdjax():
    """Same architecture and loss: with the weights copied over, the ELBOs agree."""
    torch = _torch()
    import jax.numpy as jnp
    import numpy as np
    import torch_ldn

    from vdjax.nn.models import LDN, ModelConfig
    from vdjax.training.config import TrainConfig
    from vdjax.training.objective import Objective, negative_elbo

    model = torch_ldn.TorchLDN("mlp", 3, 2, 2, 5)
    model.eval()
    cfg = ModelConfig("mlp", 3, 2, (2,), width=5)
    x = np.random.default_rng(0).normal(size=(9, 2)).astype(np.float32)
    y = np.array([0, 1, 1, 0, 1, 0, 0, 1, 1])
    ours = LDN(cfg).apply(torch_ldn.to_vdjax_variables(model), x)
    theirs = model(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    alpha = np.array([0.1, -0.2, 0.3, 0.0], np.float32)
    ref = torch_ldn.negative_elbo(torch.from_numpy(theirs), torch.from_numpy(y), torch.from_numpy(alpha), 50)
    got = negative_elbo({"model": {}, "depth_logits": jnp.asarray(alpha)}, ours, jnp.asarray(y),
                        Objective(cfg, TrainConfig(), 50))
    np.testing.assert_allclose(float(got), float(ref), rtol=1e-5)


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
def test_torch_peer_cnn_is_the_reference_network(shape):
    """The peer CNN (the reference code's layers) and vdjax's compute the same function, in
    training (batch statistics) and evaluation mode, with the same number of parameters."""
    torch = _torch()
    import jax
    import numpy as np
    import torch_ldn

    from vdjax.nn.models import LDN, ModelConfig

    torch.manual_seed(0)
    model = torch_ldn.TorchLDN("cnn", 3, 10, shape[-1], 64)
    x = np.random.default_rng(0).normal(size=(6, *shape)).astype(np.float32)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)
    assert model.input(xt).shape[-2:] == ((shape[0] - 4) // 2,) * 2  # 12x12 on MNIST, 14x14 on SVHN
    cfg = ModelConfig("cnn", 3, 10, shape)
    variables = torch_ldn.to_vdjax_variables(model)
    n_torch = sum(p.numel() for n, p in model.named_parameters() if n != "depth_logits")
    assert sum(a.size for a in jax.tree_util.tree_leaves(variables["params"])) == n_torch
    assert jax.tree_util.tree_structure(variables) == jax.tree_util.tree_structure(
        LDN(cfg).init(jax.random.key(0), x[:1]))
    model.train()
    theirs = model(xt).detach().numpy()
    ours, _ = LDN(cfg).apply(variables, x, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-4)
    # Evaluation mode with the running statistics that train-mode pass left in PyTorch. (Its
    # running variance averages the unbiased batch variance, Flax's the biased one: n/(n-1),
    # 1.2x at this batch of 6, 0.2% at the paper's 512.)
    model.eval()
    theirs = model(xt).detach().numpy()
    ours = LDN(cfg).apply(torch_ldn.to_vdjax_variables(model), x)
    np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-4)


@pytest.mark.one_stack
def test_image_throughput_quick_mode_fills_its_table(tmp_path):
    import json

    import image_throughput

    res = image_throughput.main(["--quick", "--out", str(tmp_path)])
    assert [r["networks"] for r in res["rows"]] == [1, 2]
    assert all(r["vdjax_program"] > 0 and r["vdjax_sequential"] > 0 for r in res["rows"])
    if image_throughput.torch_available():  # both PyTorch peers, on the same networks
        cores = os.cpu_count() or 1
        assert res["torch_peers"] == [f"1x{cores}"] + ([f"{cores}x1"] if cores > 1 else [])
        assert all(r["torch_best"] == max(r[f"torch_{p}"] for p in res["torch_peers"]) for r in res["rows"])
    saved = json.loads((tmp_path / "throughput.json").read_text())
    assert saved["rows"] == res["rows"] and "program / one after the other" in (tmp_path / "throughput.md").read_text()


def test_grid_flop_estimate_counts_every_block():
    """XLA counts a scan's body once; the estimate costs D blocks as D times one block."""
    import image_grid_estimate

    est = image_grid_estimate.flops_estimate(epochs=100)
    (t0, per_block), _ = est["flops_per_shape"]["28x28x1"].values()
    assert per_block > t0 > 0 and est["networks"] == 384 and est["estimate"] is True
    hours = est["gpu_hours"][image_grid_estimate.GPUS[0].name]
    assert hours[8] == pytest.approx(hours[1] / 8)


def test_every_cnn_idea_computes_the_library_block_stack():
    """The ideas timed by benchmarks/cnn_ideas.py are the same computation as the library's im2col
    block stack (loss and gradients), and that plain-JAX im2col stack is the library's form."""
    import jax
    import numpy as np

    import cnn_ideas
    from vdjax.nn.layers import conv_im2col

    errors = cnn_ideas.check_ideas()
    assert set(errors) == {"rows3", "native_vjp", "halves"}
    assert max(errors.values()) < 1e-4, errors
    x, k = jax.random.normal(jax.random.key(0), (2, 5, 5, 3)), jax.random.normal(jax.random.key(1), (3, 3, 3, 4))
    for conv in (cnn_ideas.conv_rows3, cnn_ideas.conv_native_vjp):
        np.testing.assert_allclose(conv(x, k), conv_im2col(x, k), rtol=1e-5, atol=1e-5)


@pytest.mark.one_stack
def test_trainer_feed_quick_mode_fills_its_table(tmp_path):
    """The before/after benchmark runs both trees; today's host feed computes the numbers of the
    trainer before the driver, bit for bit, and the spirals loop too."""
    import json

    import trainer_feed
    from report import feed_table

    assert trainer_feed.main(["--quick", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "feed.json").read_text())
    assert [r["max_depth"] for r in res["rows"]] == [1]
    assert all(r["host_matches_before"] for r in res["rows"]) and res["spirals"]["identical"]
    assert all(r["device_dispatches"] < r["before_dispatches"] for r in res["rows"])
    assert "| 1 |" in feed_table(res)
