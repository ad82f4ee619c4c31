"""The same learnt-depth networks in plain PyTorch: the peer for `benchmarks/compare.py`.

Same architecture (the reference code's layers: an unpadded 5x5 input convolution and 2x2
average pool, bottleneck convolutions with biases; PyTorch's default init, BatchNorm momentum
0.1 / eps 1e-5; the CNN output block's BatchNorm shares its scale and shift across depths and
keeps running statistics per depth, as vdjax does), same loss (exact negative ELBO with the 0.85^(d+1)
prior), same optimiser (one SGD with momentum over the weights and the depth logits), and an
ordinary per-step Python training loop, as a PyTorch user would write it.
"""

from __future__ import annotations

import copy
import math

import numpy as np

import torch
import torch.nn.functional as F
from torch import nn


class MLPBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.linear, self.bn = nn.Linear(width, width), nn.BatchNorm1d(width)

    def forward(self, a):
        return a + self.bn(F.relu(self.linear(a)))


class Bottleneck(nn.Module):
    def __init__(self, width: int, bottleneck: int):
        super().__init__()
        self.bn1, self.bn2, self.bn3 = nn.BatchNorm2d(width), nn.BatchNorm2d(bottleneck), nn.BatchNorm2d(bottleneck)
        self.conv1 = nn.Conv2d(width, bottleneck, 1)
        self.conv2 = nn.Conv2d(bottleneck, bottleneck, 3, padding=1)
        self.conv3 = nn.Conv2d(bottleneck, width, 1)

    def forward(self, a):
        h = self.conv1(F.relu(self.bn1(a)))
        h = self.conv2(F.relu(self.bn2(h)))
        return a + self.conv3(F.relu(self.bn3(h)))


class TorchLDN(nn.Module):
    """arch 'mlp' (spirals) or 'cnn' (images); forward returns logits [D+1, B, classes]."""

    def __init__(self, arch: str, max_depth: int, num_classes: int, in_features: int, width: int, bottleneck: int = 32):
        super().__init__()
        self.arch = arch
        if arch == "mlp":
            self.input = nn.Linear(in_features, width)
            self.blocks = nn.ModuleList(MLPBlock(width) for _ in range(max_depth))
            self.out = nn.Linear(width, num_classes)
        else:
            self.input = nn.Sequential(nn.Conv2d(in_features, width, 5), nn.AvgPool2d(2))
            self.blocks = nn.ModuleList(Bottleneck(width, bottleneck) for _ in range(max_depth))
            self.head_linear = nn.Linear(width, width)
            self.head_bn = nn.BatchNorm1d(width)  # scale and shift; statistics per depth below
            self.register_buffer("head_mean", torch.zeros(max_depth + 1, width))
            self.register_buffer("head_var", torch.ones(max_depth + 1, width))
            self.out = nn.Linear(width, num_classes)
        self.depth_logits = nn.Parameter(torch.zeros(max_depth + 1))

    def head(self, a, d: int):
        if self.arch == "mlp":
            return self.out(a)
        h = a.mean(dim=(2, 3))
        bn = self.head_bn
        h = h + F.batch_norm(F.relu(self.head_linear(h)), self.head_mean[d], self.head_var[d], bn.weight, bn.bias,
                             self.training, bn.momentum, bn.eps)
        return self.out(h)

    def forward(self, x):
        a = self.input(x)
        outs = [self.head(a, 0)]
        for d, block in enumerate(self.blocks, start=1):
            a = block(a)
            outs.append(self.head(a, d))
        return torch.stack(outs)

    def pruned(self, depth: int) -> "TorchLDN":
        """A copy cut to `depth` blocks (for inference timing)."""
        small = copy.deepcopy(self)
        small.blocks = small.blocks[:depth]
        if self.arch == "cnn":
            small.head_mean, small.head_var = small.head_mean[: depth + 1], small.head_var[: depth + 1]
        return small


def negative_elbo(logits, y, depth_logits, n_train: int, decay: float = 0.85):
    n_depths = logits.shape[0]
    nll = torch.stack([F.cross_entropy(logits[d], y) for d in range(n_depths)])
    log_q = F.log_softmax(depth_logits, dim=0)
    depths = torch.arange(1, n_depths + 1, dtype=logits.dtype, device=logits.device)
    log_p = F.log_softmax(depths * math.log(decay), dim=0)
    kl = torch.sum(log_q.exp() * (log_q - log_p))
    return torch.sum(log_q.exp() * nll) + kl / n_train


def make_optimizer(model: nn.Module, lr: float = 0.1, momentum: float = 0.5):
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)


def train_step(model, opt, x, y, n_train: int) -> float:
    model.train()
    opt.zero_grad(set_to_none=True)
    loss = negative_elbo(model(x), y, model.depth_logits, n_train)
    loss.backward()
    opt.step()
    return float(loss.detach())


def cnn_step_call(depth: int, batch: int, shape: tuple[int, int, int], width: int = 64, device: str = "cpu"):
    """One training step of a fresh CNN LDN on a fixed random batch, as a zero-argument call
    (what the benchmarks time). `shape` is (H, W, C), as vdjax's. On a GPU the model and the
    batch live on `device`; the step's `float(loss)` waits for the device to finish it."""
    model = TorchLDN("cnn", depth, 10, shape[-1], width).to(device)
    opt = make_optimizer(model)
    x = torch.randn(batch, shape[2], shape[0], shape[1], device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    return lambda: train_step(model, opt, x, y, batch)


def fit_spirals(x, y, max_depth: int = 20, width: int = 20, seed: int = 0, max_epochs: int = 8000,
                patience: int = 500) -> dict:
    """The paper's spirals protocol: full-batch SGD, early stopping on the train ELBO, keep best."""
    torch.manual_seed(seed)
    model = TorchLDN("mlp", max_depth, int(y.max()) + 1, x.shape[1], width)
    opt = make_optimizer(model)
    best, best_epoch, best_state, epoch = math.inf, -1, None, 0
    for epoch in range(max_epochs):
        loss = train_step(model, opt, x, y, len(x))
        if loss < best:
            best, best_epoch = loss, epoch
            best_state = copy.deepcopy(model.state_dict())
        if epoch - best_epoch > patience:
            break
    model.load_state_dict(best_state)
    return {"model": model, "epochs": epoch + 1, "best_loss": best, "best_epoch": best_epoch}


def to_vdjax_variables(model: TorchLDN) -> dict:
    """The model's weights and running statistics as vdjax `LDN` variables (numpy arrays), so
    both frameworks can be checked to compute the same function."""
    t = lambda p: p.detach().cpu().numpy()  # noqa: E731
    stack = lambda f: np.stack([f(b) for b in model.blocks])  # noqa: E731
    dense = lambda m: {"kernel": t(m.weight).T, "bias": t(m.bias)}  # noqa: E731
    conv1x1 = lambda m: {"kernel": t(m.weight)[:, :, 0, 0].T, "bias": t(m.bias)}  # noqa: E731
    conv = lambda m: {"kernel": t(m.weight).transpose(2, 3, 1, 0), "bias": t(m.bias)}  # noqa: E731  OIHW->HWIO
    affine = lambda bn: {"scale": t(bn.weight), "bias": t(bn.bias)}  # noqa: E731
    moments = lambda bn: {"mean": t(bn.running_mean), "var": t(bn.running_var)}  # noqa: E731

    def stacked(parts: dict) -> dict:  # {name: fn(block) -> {leaf: array}} -> stacked over blocks
        return {k: {leaf: stack(lambda b, f=f, leaf=leaf: f(b)[leaf]) for leaf in f(model.blocks[0])}
                for k, f in parts.items()}

    if model.arch == "mlp":
        params = {"input": dense(model.input), "head": {"Linear_0": dense(model.out)}}
        block_params = {"Linear_0": lambda b: dense(b.linear), "BatchNorm_0": lambda b: affine(b.bn)}
        block_stats = {"BatchNorm_0": lambda b: moments(b.bn)}
        stats: dict = {}
        name = "MLPBlock_0"
    else:
        params = {"input": conv(model.input[0]),
                  "head": {"MLPBlock_0": {"Linear_0": dense(model.head_linear), "BatchNorm_0": affine(model.head_bn)},
                           "Linear_0": dense(model.out)}}
        block_params = {"BatchNorm_0": lambda b: affine(b.bn1), "Linear_0": lambda b: conv1x1(b.conv1),
                        "BatchNorm_1": lambda b: affine(b.bn2), "Conv_0": lambda b: conv(b.conv2),
                        "BatchNorm_2": lambda b: affine(b.bn3), "Linear_1": lambda b: conv1x1(b.conv3)}
        block_stats = {f"BatchNorm_{i}": lambda b, i=i: moments(getattr(b, f"bn{i + 1}")) for i in range(3)}
        stats = {"head": {"MLPBlock_0": {"BatchNorm_0": {"mean": t(model.head_mean), "var": t(model.head_var)}}}}
        name = "BottleneckBlock_0"
    if len(model.blocks):
        params["blocks"] = {"scan": {name: stacked(block_params)}}
        stats["blocks"] = {"scan": {name: stacked(block_stats)}}
    return {"params": params, "batch_stats": stats}
