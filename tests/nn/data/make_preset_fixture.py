"""Writes `presets.msgpack`: the paper's MLP and CNN at a fixed key (init variables, eval and train
outputs, and the state after one train step), which `tests/nn/test_presets.py` pins the presets to.

Run from the repository root: `PYTHONPATH=. python3 tests/nn/data/make_preset_fixture.py` (CPU).
"""

from pathlib import Path

import flax.serialization
import jax

from vdjax.nn.models import LDN, ModelConfig
from vdjax.training.config import TrainConfig
from vdjax.training.step import init_state, make_optimizer, make_train_step

PRESETS = {
    "mlp": ModelConfig("mlp", 3, 2, (2,), width=8),
    "cnn": ModelConfig("cnn", 2, 10, (12, 12, 1), width=8, bottleneck=4),
}
BATCH = 8


def record(cfg: ModelConfig) -> dict:
    kx, ky, kinit = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (BATCH, *cfg.input_shape))
    y = jax.random.randint(ky, (BATCH,), 0, cfg.num_classes)
    train_config = TrainConfig(batch_size=BATCH)
    optimizer = make_optimizer(train_config, 1)
    state = init_state(kinit, cfg, optimizer)
    eval_logits = LDN(cfg).apply(state.variables, x)
    train_logits, _ = LDN(cfg).apply(state.variables, x, train=True, mutable=["batch_stats"])
    variables = jax.device_get(state.variables)  # the step donates the state
    new, metrics = make_train_step(cfg, train_config, optimizer, BATCH)(state, x, y)
    return {"x": x, "y": y, "variables": variables, "eval_logits": eval_logits, "train_logits": train_logits,
            "step_params": new.params, "step_batch_stats": new.batch_stats, "step_loss": metrics["loss"]}


if __name__ == "__main__":
    out = Path(__file__).with_name("presets.msgpack")
    out.write_bytes(flax.serialization.to_bytes(jax.device_get({k: record(c) for k, c in PRESETS.items()})))
    print(f"wrote {out} ({out.stat().st_size} bytes)")
