"""Ideas for a faster CPU train step of the reference CNN's block stack, each measured in one run.

    python3 benchmarks/cnn_ideas.py --out benchmarks/latest/cnn_ideas   # about 5 minutes, idle machine
    python3 benchmarks/cnn_ideas.py --quick                             # tiny shapes: checks the script

The block stack is the part of the step that grows with depth (at D = 20 it is over 90% of the
step). Each idea is the same computation, written in plain JAX beside the library's own form:
D reference bottleneck blocks (BN-ReLU, 1x1 conv 64->32, BN-ReLU, 3x3 conv 32->32, BN-ReLU,
1x1 conv 32->64, all with biases, batch-statistics BatchNorm), stacked parameters, `lax.scan`,
every block rematerialised, and the gradient of a loss on every depth's pooled features.

- `im2col`: the library's form: 9 shifted copies concatenated (K = 288), one matrix product.
- `rows3`: 3 column-shifted copies (K = 96), one product giving the 3 row taps (N = 96) over
  the padded rows, summed over row shifts: a third of the patch memory for 17% more FLOPs.
- `native_vjp`: XLA's native convolution forward, with a custom VJP whose data gradient is a
  native convolution by the flipped kernel and whose kernel gradient is a native convolution
  with the batch as the contraction (autodiff of `lax.conv` inside a scan is ~10x slower).
- `halves`: the batch split into two independent chains that share only the BatchNorm
  moments, so that XLA:CPU, which overlaps independent operations, can keep both cores busy.
- `no_conv`: the 3x3 convolution replaced by a scale: not a network, a bound on what any
  faster convolution could give.

Every idea is checked against `im2col` (loss and gradients) before it is timed. The library's
whole train step (`vdjax.training.step`) and, when PyTorch is installed, the PyTorch peer's step are
timed in the same rounds. Rounds interleave the variants; each time is a median over rounds.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp

from vdjax.cli import validate
from vdjax.nn.layers import conv_im2col as library_conv
from vdjax.nn.models import ModelConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cnn_step import train_step_call  # noqa: E402

DN = ("NHWC", "HWIO", "NHWC")


def _pad1(x: jax.Array) -> jax.Array:
    return jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))


def conv_im2col(x: jax.Array, k: jax.Array) -> jax.Array:
    return library_conv(x, k, "SAME")


def conv_rows3(x: jax.Array, k: jax.Array) -> jax.Array:
    _, h, w, c = x.shape
    o = k.shape[-1]
    xp = _pad1(x)
    p = jnp.concatenate([xp[:, :, j : j + w] for j in range(3)], -1)  # [N, H+2, W, 3C]: (j, c)
    y = jnp.dot(p, k.transpose(1, 2, 0, 3).reshape(3 * c, 3 * o))  # [N, H+2, W, 3O]: (i, o)
    return sum(y[:, i : i + h, :, i * o : (i + 1) * o] for i in range(3))


def _native(x: jax.Array, k: jax.Array, padding: str = "SAME") -> jax.Array:
    return jax.lax.conv_general_dilated(x, k, (1, 1), padding, dimension_numbers=DN)


@jax.custom_vjp
def conv_native_vjp(x: jax.Array, k: jax.Array) -> jax.Array:
    return _native(x, k)


def _native_fwd(x, k):
    return _native(x, k), (x, k)


def _native_bwd(res, g):
    x, k = res
    dx = _native(g, jnp.flip(k, (0, 1)).transpose(0, 1, 3, 2))
    # dk[i, j, c, o] = sum_{n,h,w} xp[n, h+i, w+j, c] g[n, h, w, o]: a VALID convolution with
    # channels as the batch and the batch as the contraction.
    dk = _native(_pad1(x).transpose(3, 1, 2, 0), g.transpose(1, 2, 0, 3), "VALID").transpose(1, 2, 0, 3)
    return dx, dk


conv_native_vjp.defvjp(_native_fwd, _native_bwd)


def conv_none(x: jax.Array, k: jax.Array) -> jax.Array:
    return x * k[1, 1, 0, 0]


def _bn_relu(hs: list[jax.Array], scale: jax.Array, bias: jax.Array) -> list[jax.Array]:
    """BatchNorm (batch statistics, one pass) and ReLU over the chains' union: only the moments
    cross between chains."""
    n = sum(h.shape[0] * h.shape[1] * h.shape[2] for h in hs)
    mean = sum(jnp.sum(h, (0, 1, 2)) for h in hs) / n
    var = sum(jnp.sum(h * h, (0, 1, 2)) for h in hs) / n - mean * mean
    mul = jax.lax.rsqrt(var + 1e-5) * scale
    return [jax.nn.relu((h - mean) * mul + bias) for h in hs]


def block(p: dict[str, jax.Array], chains: list[jax.Array], conv: Callable) -> list[jax.Array]:
    hs = _bn_relu(chains, p["s1"], p["b1"])
    hs = _bn_relu([jnp.dot(h, p["w1"]) + p["c1"] for h in hs], p["s2"], p["b2"])
    hs = _bn_relu([conv(h, p["k"]) + p["c2"] for h in hs], p["s3"], p["b3"])
    return [a + jnp.dot(h, p["w3"]) + p["c3"] for a, h in zip(chains, hs)]


def init_blocks(key: jax.Array, depth: int, width: int, bottleneck: int) -> dict[str, jax.Array]:
    ks = jax.random.split(key, 3)
    normal = lambda k, *s: 0.05 * jax.random.normal(k, (depth, *s))  # noqa: E731
    z, o = (lambda *s: jnp.zeros((depth, *s))), (lambda *s: jnp.ones((depth, *s)))
    return dict(w1=normal(ks[0], width, bottleneck), k=normal(ks[1], 3, 3, bottleneck, bottleneck),
                w3=normal(ks[2], bottleneck, width), c1=z(bottleneck), c2=z(bottleneck), c3=z(width),
                s1=o(width), b1=z(width), s2=o(bottleneck), b2=z(bottleneck), s3=o(bottleneck), b3=z(bottleneck))


IDEAS: dict[str, tuple[Callable, int]] = {  # name -> (3x3 convolution, chains)
    "im2col": (conv_im2col, 1),
    "rows3": (conv_rows3, 1),
    "native_vjp": (conv_native_vjp, 1),
    "halves": (conv_im2col, 2),
    "no_conv": (conv_none, 1),
}


def stack_loss(conv: Callable, chains: int) -> Callable:
    """Loss of D rematerialised blocks under `lax.scan`, on every depth's pooled features."""

    def loss(params, x):
        def body(hs, p):
            hs = jax.checkpoint(lambda p, hs: block(p, hs, conv))(p, hs)
            return hs, jnp.concatenate([jnp.mean(h, (1, 2)) for h in hs], 0)

        _, feats = jax.lax.scan(body, list(jnp.split(x, chains)), params)
        return jnp.sum(jnp.sin(feats))

    return loss


def check_ideas(depth: int = 2, batch: int = 8, hw: int = 6, width: int = 8, bottleneck: int = 4) -> dict[str, float]:
    """Largest difference of each idea's loss and gradients from `im2col`'s, relative to the largest
    value among them (no_conv excluded). Per leaf it would not do: the gradient of a bias that a
    BatchNorm follows is zero up to rounding."""
    params = init_blocks(jax.random.key(0), depth, width, bottleneck)
    x = jax.random.normal(jax.random.key(1), (batch, hw, hw, width))
    ref = jax.jit(jax.value_and_grad(stack_loss(*IDEAS["im2col"])))(params, x)
    out = {}
    for name, idea in IDEAS.items():
        if name in ("im2col", "no_conv"):
            continue
        got = jax.jit(jax.value_and_grad(stack_loss(*idea)))(params, x)
        scale = max(float(jnp.max(jnp.abs(b))) for b in jax.tree.leaves(ref))
        out[name] = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref))) / scale
    return out


def _timers(depth: int, batch: int, hw: int, width: int, bottleneck: int, shape: tuple[int, int, int],
            ideas: list[str]) -> dict[str, Callable[[], None]]:
    """One zero-argument call per row, compiled and warmed up."""
    params = init_blocks(jax.random.key(0), depth, width, bottleneck)
    x = jax.random.normal(jax.random.key(1), (batch, hw, hw, width))
    calls = {}
    for name in ideas:
        step = jax.jit(jax.value_and_grad(stack_loss(*IDEAS[name]))).lower(params, x).compile()
        calls[name] = lambda step=step: jax.block_until_ready(step(params, x))
    calls["library step"] = train_step_call(
        ModelConfig("cnn", depth, 10, shape, width=width, bottleneck=bottleneck), batch)[1]
    try:
        import torch

        import torch_ldn

        torch.set_num_threads(os.cpu_count() or 1)
        calls["PyTorch step"] = torch_ldn.cnn_step_call(depth, batch, shape, width)
    except ImportError:
        pass
    for call in calls.values():
        call()
        call()
    return calls


def measure(depths: list[int], batch: int, shape: tuple[int, int, int], rounds: int, ideas: list[str],
            width: int = 64, bottleneck: int = 32) -> list[dict]:
    hw = (shape[0] - 4) // 2  # the reference input block: unpadded 5x5 convolution, 2x2 pool
    rows = []
    for depth in depths:
        calls = _timers(depth, batch, hw, width, bottleneck, shape, ideas)
        times: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(rounds):
            for name, call in calls.items():
                t0 = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - t0)
        row = {"max_depth": depth, "seconds": {name: statistics.median(t) for name, t in times.items()},
               "all_seconds": times}
        print("cnn_ideas", depth, {k: round(v, 3) for k, v in row["seconds"].items()}, flush=True)
        rows.append(row)
    return rows


def main(argv=None) -> dict:
    p = validate.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny shapes, seconds: checks the script, not the speed")
    p.add_argument("--depths", type=validate.positive_int, nargs="+", default=[20, 50])
    p.add_argument("--batch", type=validate.positive_int, default=128)
    p.add_argument("--rounds", type=validate.positive_int, default=5)
    p.add_argument("--ideas", nargs="+", choices=list(IDEAS), default=list(IDEAS))
    p.add_argument("--out", type=validate.output_dir, default=None, help="write cnn_ideas.json here")
    args = p.parse_args(argv)
    errors = check_ideas()
    print("largest relative difference from im2col (loss and gradients):", {k: f"{v:.1e}" for k, v in errors.items()})
    bad = {k: v for k, v in errors.items() if v > 1e-4}
    if bad:
        raise RuntimeError(f"ideas that do not compute the im2col block stack: {bad}")
    if args.quick:
        depths, batch, shape, rounds, width, bottleneck = [2], 8, (16, 16, 1), 2, 8, 4
    else:
        depths, batch, shape, rounds, width, bottleneck = args.depths, args.batch, (28, 28, 1), args.rounds, 64, 32
    res = {"machine": f"{platform.machine()} {os.cpu_count()} cores, jax {jax.__version__} ({jax.default_backend()})",
           "command": "python3 benchmarks/cnn_ideas.py" + (" --quick" if args.quick else ""),
           "batch": batch, "shape": list(shape), "width": width, "bottleneck": bottleneck, "rounds": rounds,
           "check": errors, "rows": measure(depths, batch, shape, rounds, args.ideas, width, bottleneck)}
    if args.out:
        from vdjax.io import write_json

        write_json(args.out / "cnn_ideas.json", res)
    return res


if __name__ == "__main__":
    sys.exit(validate.run_main(main))
