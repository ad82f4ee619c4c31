"""A multi-stage pre-activation ResNet as a `Network.from_stages` LDN (Linen modules).

    stem        3x3 conv (width[0]) + 2x2 average pool        28x28 -> 14x14
    stage s     transition (s > 0): BN-ReLU-3x3 conv, stride 2, width[s-1] -> width[s]
                blocks: a + BN-ReLU-Conv3x3-BN-ReLU-Conv3x3(a)  (pre-activation basic blocks)
                exit: global average pool (the network's `pool`) -> Linear(width[s] -> common)
    head        one residual MLP block (Linear-ReLU-BN, common width) -> Linear(common -> classes)

Depth d counts blocks over all stages; `staged_resnet(...).truncated(d)` is the network cut
after its d-th block (what pruning to d keeps, and a DDN of depth d). The 3x3 convolutions inside
the scanned blocks are matrix products on CPU (`vdjax.nn.layers.Conv`, impl 'auto'); the stride-2
transitions run once per stage, outside the scan, as XLA convolutions.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from vdjax.nn.layers import Conv, Linear, batch_norm, torch_bias_init, torch_kernel_init
from vdjax.nn.models import CNNHead, GlobalPool, PooledConv
from vdjax.nn.network import Network, Stage


class PreActBlock(nn.Module):
    """Residual branch of a pre-activation basic block: Conv3x3(BN-ReLU(Conv3x3(BN-ReLU(a))))."""

    width: int

    @nn.compact
    def __call__(self, a: jax.Array, train: bool = False) -> jax.Array:
        h = Conv(self.width, 3, impl="auto")(nn.relu(batch_norm(train)(a)))
        return Conv(self.width, 3, impl="auto")(nn.relu(batch_norm(train)(h)))


class Downsample(nn.Module):
    """A stage's transition: BN-ReLU, then a stride-2 3x3 convolution to `width` channels
    (padding 1, so 14x14 -> 7x7 -> 4x4), PyTorch's default initialisation."""

    width: int

    @nn.compact
    def __call__(self, a: jax.Array, train: bool = False) -> jax.Array:
        h = nn.relu(batch_norm(train)(a))
        fan_in = 9 * h.shape[-1]
        kernel = self.param("kernel", torch_kernel_init, (3, 3, h.shape[-1], self.width))
        y = jax.lax.conv_general_dilated(h, kernel, (2, 2), ((1, 1), (1, 1)),
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + self.param("bias", torch_bias_init(fan_in), (self.width,))


class StageExit(nn.Module):
    """A stage's exit: its pooled features [B, width_s] -> the head's common width."""

    width: int

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        return Linear(self.width)(h)


def staged_resnet(blocks: tuple[int, ...] = (3, 3, 3), widths: tuple[int, ...] = (16, 32, 64),
                  num_classes: int = 10, input_shape: tuple[int, ...] = (28, 28, 1), common: int = 64) -> Network:
    """The LDN with `blocks[s]` blocks of `widths[s]` channels in stage s (max depth sum(blocks))."""
    if len(blocks) != len(widths) or not blocks:
        raise ValueError(f"one width per stage: got {len(blocks)} stages' blocks and {len(widths)} widths")
    stages = tuple(Stage(PreActBlock(w), n, transition=Downsample(w) if s else None, exit=StageExit(common))
                   for s, (n, w) in enumerate(zip(blocks, widths)))
    return Network.from_stages(PooledConv(widths[0], 3, impl="auto"), stages, CNNHead(common, num_classes),
                               num_classes=num_classes, input_shape=input_shape, pool=GlobalPool())


def depth_factory(blocks: tuple[int, ...] = (3, 3, 3), widths: tuple[int, ...] = (16, 32, 64), **kwargs):
    """`max_depth -> Network`: the full network cut after `max_depth` blocks (a DDN of that depth,
    or the LDN itself at sum(blocks))."""
    full = staged_resnet(blocks, widths, **kwargs)

    def make(max_depth: int) -> Network:
        return full.truncated(max_depth)

    return make


__all__ = ["Downsample", "PreActBlock", "StageExit", "depth_factory", "staged_resnet"]
