"""The same learnt-depth networks in plain PyTorch: the peer for `benchmarks/compare.py`.

Same architecture (PyTorch's default init, BatchNorm momentum 0.1 / eps 1e-5, one BatchNorm
per depth in the CNN output block), same loss (exact negative ELBO with the 0.85^(d+1)
prior), same optimiser (one SGD with momentum over the weights and the depth logits), and an
ordinary per-step Python training loop, as a PyTorch user would write it.
"""

from __future__ import annotations

import copy
import math

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
        self.conv1 = nn.Conv2d(width, bottleneck, 1, bias=False)
        self.conv2 = nn.Conv2d(bottleneck, bottleneck, 3, padding=1, bias=False)
        self.conv3 = nn.Conv2d(bottleneck, width, 1, bias=False)

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
            self.input = nn.Sequential(nn.Conv2d(in_features, width, 5, padding=2), nn.AvgPool2d(2))
            self.blocks = nn.ModuleList(Bottleneck(width, bottleneck) for _ in range(max_depth))
            self.head_linear = nn.Linear(width, width)
            self.head_bns = nn.ModuleList(nn.BatchNorm1d(width) for _ in range(max_depth + 1))
            self.out = nn.Linear(width, num_classes)
        self.depth_logits = nn.Parameter(torch.zeros(max_depth + 1))

    def head(self, a, d: int):
        if self.arch == "mlp":
            return self.out(a)
        h = a.mean(dim=(2, 3))
        h = h + self.head_bns[d](F.relu(self.head_linear(h)))
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
            small.head_bns = small.head_bns[: depth + 1]
        return small


def negative_elbo(logits, y, depth_logits, n_train: int, decay: float = 0.85):
    n_depths = logits.shape[0]
    nll = torch.stack([F.cross_entropy(logits[d], y) for d in range(n_depths)])
    log_q = F.log_softmax(depth_logits, dim=0)
    log_p = F.log_softmax(torch.arange(1, n_depths + 1, dtype=logits.dtype) * math.log(decay), dim=0)
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
