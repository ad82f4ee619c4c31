"""Figures drawn from results (arrays or result files), never from inside training code."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vdjax.io import save_figure  # noqa: E402


def plot_depth_posterior(
    q: np.ndarray,
    per_depth_log_lik: np.ndarray,
    marginal_log_lik: float,
    d_opt: int,
    path: str | os.PathLike,
    ddn_log_lik: np.ndarray | None = None,
    title: str = "",
):
    """Fig 2 (left): q(d) as bars, test log-likelihood per depth on a second axis."""
    q = np.atleast_2d(q)
    depths = np.arange(q.shape[1])
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ax.bar(depths, q.mean(0), yerr=q.std(0) if len(q) > 1 else None, color="tab:blue", alpha=0.6,
           label="q(d)")
    ax.axvline(d_opt, color="tab:blue", ls="--", lw=1, label=f"d_opt = {d_opt}")
    ax.set_xlabel("depth d")
    ax.set_ylabel("q(d)")
    ax2 = ax.twinx()
    ll = np.atleast_2d(per_depth_log_lik)
    ax2.plot(depths, ll.mean(0), "o-", color="tab:red", ms=3, label="LDN, single depth d")
    if ddn_log_lik is not None:
        ddn = np.atleast_2d(ddn_log_lik)
        ax2.plot(np.arange(ddn.shape[1]), ddn.mean(0), "s-", color="tab:green", ms=3, label="DDN of depth d")
    ax2.axhline(float(np.mean(marginal_log_lik)), color="k", ls=":", label="LDN marginal")
    ax2.set_ylabel("test log-likelihood")
    ax2.set_ylim(max(float(np.nanmin(ll)) - 0.05, -3.0), 0.05)
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="lower right", fontsize=8)
    ax.set_title(title or "posterior over depth and test log-likelihood")
    return save_figure(fig, path)


def plot_decision_functions(
    grid_x: np.ndarray | None,
    grid_y: np.ndarray | None,
    probs,
    titles: list[str],
    x_train: np.ndarray | None,
    y_train: np.ndarray | None,
    path: str | os.PathLike,
    ncols: int = 4,
    rows: list[tuple[np.ndarray, np.ndarray]] | None = None,
):
    """Figs 3/7/8: p(class 1 | x) over the input plane, one panel per depth (or marginal).

    Either one grid and one training set for every panel, or (`rows`) one training set per row
    of `ncols` panels with `probs` a list of (grid_x, grid_y, map) per panel.
    """
    n = len(probs)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.6 * nrows), squeeze=False)
    for i, (ax, p, title) in enumerate(zip(axes.flat, probs, titles)):
        gx, gy, p = p if rows is not None else (grid_x, grid_y, p)
        xt, yt = rows[i // ncols] if rows is not None else (x_train, y_train)
        ax.contourf(gx, gy, p, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.8)
        ax.scatter(xt[:, 0], xt[:, 1], c=yt, cmap="RdBu_r", s=5, edgecolors="k", linewidths=0.2)
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.flat[n:]:
        ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_sweep(table: dict[str, np.ndarray], key: str, path: str | os.PathLike, xlabel: str = "",
               log_x: bool = False, title: str = ""):
    """Figs 2 (right), 5, 6: d_opt and test log-likelihood against a swept variable, with
    error bars over repeats (from `vdjax.sweeps.sweep_table`)."""
    x = table[key]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    a1.errorbar(x, table["d_opt"], table["d_opt_std"], marker="o", capsize=3, label="d_opt (95% rule)")
    a1.errorbar(x, table["d_expected"], table["d_expected_std"], marker="s", capsize=3, alpha=0.6,
                label="expected depth")
    a1.set_ylabel("learnt depth")
    a2.errorbar(x, table["test_log_lik"], table["test_log_lik_std"], marker="o", capsize=3,
                label="marginal over all depths")
    a2.errorbar(x, table["pruned_log_lik"], table["pruned_log_lik_std"], marker="s", capsize=3, ls="--",
                label="pruned, d <= d_opt")
    a2.set_ylabel("test log-likelihood")
    for ax in (a1, a2):
        ax.set_xlabel(xlabel or key)
        if log_x:
            ax.set_xscale("log")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)
