"""The benchmark's quick mode runs here so the script cannot rot; no timing is asserted."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_compare_quick_mode_fills_every_table(tmp_path):
    import compare

    res = compare.main(["--quick", "--out", str(tmp_path)])
    assert [r["max_depth"] for r in res["cnn"]] == [2, 4]
    assert all(r["vdjax_step_s"] > 0 and r["vdjax_compile_s"] > 0 for r in res["cnn"])
    assert res["spirals"]["vdjax_epochs"] == [30, 30]
    # Equal work: with patience >= epochs no seed stops early, in either framework.
    fixed = res["spirals_fixed_epochs"]
    assert [r["seeds"] for r in fixed] == [1, 2] and [r["vdjax_epochs"] for r in fixed] == [[30], [30, 30]]
    assert all(r.get("torch_epochs", r["vdjax_epochs"]) == r["vdjax_epochs"] for r in fixed)
    assert res["pruned"]["ideal_ratio"] == pytest.approx(2 / 5)
    table = (tmp_path / "table.md").read_text()
    assert "### Pruned inference" in table and "Equal work" in table


def test_torch_peer_computes_the_same_loss_as_vdjax():
    """Same architecture and loss: with the weights copied over, the ELBOs agree."""
    if os.environ.get("VDJAX_REQUIRE_TORCH") == "1":  # CI installs it: a missing torch fails there
        import torch
    else:
        torch = pytest.importorskip("torch")
    import jax.numpy as jnp
    import numpy as np
    import torch_ldn

    from vdjax.models import LDN, ModelConfig
    from vdjax.posterior import negative_elbo

    model = torch_ldn.TorchLDN("mlp", 3, 2, 2, 5)
    model.eval()
    cfg = ModelConfig("mlp", 3, 2, (2,), width=5)
    t = lambda p: jnp.asarray(p.detach().numpy())  # noqa: E731
    blocks = model.blocks
    params = {
        "input": {"kernel": t(model.input.weight).T, "bias": t(model.input.bias)},
        "head": {"Linear_0": {"kernel": t(model.out.weight).T, "bias": t(model.out.bias)}},
        "blocks": {"scan": {"MLPBlock_0": {
            "Linear_0": {"kernel": jnp.stack([t(b.linear.weight).T for b in blocks]),
                         "bias": jnp.stack([t(b.linear.bias) for b in blocks])},
            "BatchNorm_0": {"scale": jnp.stack([t(b.bn.weight) for b in blocks]),
                            "bias": jnp.stack([t(b.bn.bias) for b in blocks])}}}},
    }
    stats = {"blocks": {"scan": {"MLPBlock_0": {"BatchNorm_0": {
        "mean": jnp.stack([t(b.bn.running_mean) for b in blocks]),
        "var": jnp.stack([t(b.bn.running_var) for b in blocks])}}}}}
    x = np.random.default_rng(0).normal(size=(9, 2)).astype(np.float32)
    y = np.array([0, 1, 1, 0, 1, 0, 0, 1, 1])
    ours = LDN(cfg).apply({"params": params, "batch_stats": stats}, x)
    theirs = model(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    alpha = np.array([0.1, -0.2, 0.3, 0.0], np.float32)
    ref = torch_ldn.negative_elbo(torch.from_numpy(theirs), torch.from_numpy(y), torch.from_numpy(alpha), 50)
    got, _ = negative_elbo(ours, jnp.asarray(y), jnp.asarray(alpha), 50)
    np.testing.assert_allclose(float(got), float(ref), rtol=1e-5)
