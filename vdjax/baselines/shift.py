"""Dataset shift and out-of-distribution detection: rotated images, Brier score, entropy AUROC.

DUN's shift benchmark rotates MNIST test digits by 0-180 degrees and reports log-likelihood,
error, ECE and Brier score against the angle; its OOD benchmark scores inputs by predictive
entropy and reports the AUC-ROC of telling in- from out-of-distribution data. Offline we make
the OOD split from one data set: train on some classes, hold the others out as OOD
(`class_split`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vdjax.data.core import Dataset


def rotate_images(x: np.ndarray, degrees: float, fill: float | np.ndarray = 0.0) -> np.ndarray:
    """Images [N, H, W, C] rotated counter-clockwise by `degrees` about their centre (bilinear,
    same size; corners filled with `fill`, e.g. the normalised value of a black pixel)."""
    from scipy.ndimage import rotate

    x = np.asarray(x, np.float32)
    if x.ndim != 4:
        raise ValueError(f"images must be [N, H, W, C], got shape {list(x.shape)}")
    if degrees % 360 == 0:
        return x.copy()
    fill = np.broadcast_to(np.asarray(fill, np.float32), (x.shape[-1],))
    out = np.empty_like(x)
    for c in range(x.shape[-1]):
        out[..., c] = rotate(x[..., c], degrees, axes=(2, 1), reshape=False, order=1, mode="constant",
                             cval=float(fill[c]))
    return out


def brier_score(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean over examples of sum_c (p_c - 1[y = c])^2 (0 is perfect, 2 the worst)."""
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    onehot = np.eye(probs.shape[-1])[labels]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=-1)))


def predictive_entropy(probs: np.ndarray) -> np.ndarray:
    """-sum_c p_c log p_c per example [N, C] -> [N] (0 log 0 = 0)."""
    probs = np.asarray(probs, np.float64)
    return -np.sum(np.where(probs > 0, probs * np.log(np.where(probs > 0, probs, 1.0)), 0.0), axis=-1)


def auroc(scores_in: np.ndarray, scores_out: np.ndarray) -> float:
    """AUC-ROC of telling out-of-distribution inputs (positives, should score higher) from
    in-distribution ones: P(score_out > score_in) + P(tie) / 2 (the Mann-Whitney statistic)."""
    from scipy.stats import rankdata

    scores_in, scores_out = np.ravel(scores_in), np.ravel(scores_out)
    if not scores_in.size or not scores_out.size:
        raise ValueError("AUROC needs at least one in- and one out-of-distribution score")
    ranks = rankdata(np.concatenate([scores_in, scores_out]))
    n_in, n_out = scores_in.size, scores_out.size
    return float((ranks[n_in:].sum() - n_out * (n_out + 1) / 2) / (n_in * n_out))


def class_split(data: Dataset, in_classes: list[int]) -> tuple[Dataset, np.ndarray]:
    """An OOD split of one data set: the train and test examples of `in_classes` (relabelled
    0..len-1) as the in-distribution data set, and the test images of every other class as OOD."""
    in_classes = sorted(set(int(c) for c in in_classes))
    if not in_classes or len(in_classes) >= data.num_classes or min(in_classes) < 0 or max(in_classes) >= data.num_classes:
        raise ValueError(f"in-distribution classes must be a proper subset of 0..{data.num_classes - 1}, got {in_classes}")
    relabel = np.full(data.num_classes, -1)
    relabel[in_classes] = np.arange(len(in_classes))
    tr, te = np.isin(data.y_train, in_classes), np.isin(data.y_test, in_classes)
    kept = dataclasses.replace(data, name=f"{data.name}_in{''.join(map(str, in_classes))}",
                               x_train=data.x_train[tr], y_train=relabel[data.y_train[tr]],
                               x_test=data.x_test[te], y_test=relabel[data.y_test[te]], num_classes=len(in_classes),
                               x_val=None, y_val=None, validation=None)
    return kept, data.x_test[~te]
