"""Figures drawn from results (arrays or result files), never from inside training code.

Figures are `matplotlib.figure.Figure` objects saved straight to files: importing this module
neither selects a backend nor touches pyplot's state, so it behaves the same in a script, a
notebook with its own backend, or on a machine without a display.
"""

from __future__ import annotations

import dataclasses
import os

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from vdjax.io import save_figure


def subplots(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] | None = None, **kwargs):
    """`pyplot.subplots` without pyplot: (figure, axes) of a figure no backend manages."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def _finish(fig, path: str | os.PathLike, title: str = ""):
    """Title (if any), tight layout, atomic save."""
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


@dataclasses.dataclass(frozen=True)
class DepthPosterior:
    """What Figs 2 (left) and 4 draw. `q` and `per_depth_log_lik` (the LDN's test log-likelihood
    of every single depth) are [depths] or [seeds, depths]; `ddn_log_lik` is the DDNs' test
    log-likelihood ([depths] or [seeds, depths]) at depths 0, 1, ... or at `ddn_depths` when only
    some depths were trained. `d_argmax`, the most probable depth, is marked beside the 95% rule's
    `d_opt`."""

    q: np.ndarray
    per_depth_log_lik: np.ndarray
    marginal_log_lik: float
    d_opt: int
    d_argmax: int | None = None
    ddn_log_lik: np.ndarray | None = None
    ddn_depths: np.ndarray | None = None


def plot_depth_posterior(posterior: DepthPosterior, path: str | os.PathLike, title: str = "",
                         judged_from: int | None = None):
    """Figs 2 (left) and 4: q(d) as bars, test log-likelihood per depth on a second axis. The
    depths below `judged_from` are shaded, as left out of the comparison of q with the DDNs (a
    check rather than its evidence)."""
    post = posterior
    q = np.atleast_2d(post.q)
    depths = np.arange(q.shape[1])
    fig, ax = subplots(figsize=(7, 3.8))
    if judged_from:
        ax.axvspan(-0.5, judged_from - 0.5, color="0.85", label=f"d < {judged_from}: not in the q-DDN verdict")
    ax.bar(depths, q.mean(0), yerr=q.std(0) if len(q) > 1 else None, color="tab:blue", alpha=0.6,
           label="q(d)")
    ax.axvline(post.d_opt, color="tab:blue", ls="--", lw=1, label=f"d_opt (95% rule) = {post.d_opt}")
    if post.d_argmax is not None:
        ax.axvline(post.d_argmax, color="tab:purple", ls="-.", lw=1, label=f"argmax q = {post.d_argmax}")
    ax.set_xlabel("depth d")
    ax.set_ylabel("q(d)")
    ax2 = ax.twinx()
    ll = np.atleast_2d(post.per_depth_log_lik)
    ax2.plot(depths, ll.mean(0), "o-", color="tab:red", ms=3, label="LDN, single depth d")
    if post.ddn_log_lik is not None:
        ddn = np.atleast_2d(post.ddn_log_lik)
        at = np.arange(ddn.shape[1]) if post.ddn_depths is None else np.asarray(post.ddn_depths)
        ax2.plot(at, ddn.mean(0), "s-", color="tab:green", ms=3, label="DDN of depth d")
    ax2.axhline(float(np.mean(post.marginal_log_lik)), color="k", ls=":", label="LDN marginal")
    ax2.set_ylabel("test log-likelihood")
    ax2.set_ylim(max(float(np.nanmin(ll)) - 0.05, -3.0), 0.05)
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="lower right", fontsize=8)
    ax.set_title(title or "posterior over depth and test log-likelihood")
    return save_figure(fig, path)


Panel = tuple[np.ndarray, np.ndarray, np.ndarray]  # (grid x, grid y, p(class 1) on the grid)
Points = tuple[np.ndarray, np.ndarray]  # (training inputs, labels)


def plot_decision_functions(panels: list[Panel], titles: list[str], train: Points | list[Points],
                            path: str | os.PathLike, ncols: int = 4):
    """Figs 3/7/8: p(class 1 | x) over the input plane, one panel per depth (or marginal), over
    the training points `train`: one set for every panel, or a list of one set per row of `ncols`
    panels."""
    n = len(panels)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = subplots(nrows, ncols, figsize=(2.6 * ncols, 2.6 * nrows), squeeze=False)
    for i, (ax, (gx, gy, p), title) in enumerate(zip(axes.flat, panels, titles)):
        xt, yt = train[i // ncols] if isinstance(train, list) else train
        ax.contourf(gx, gy, p, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.8)
        ax.scatter(xt[:, 0], xt[:, 1], c=yt, cmap="RdBu_r", s=5, edgecolors="k", linewidths=0.2)
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.flat[n:]:
        ax.axis("off")
    return _finish(fig, path)


def plot_sweep(table: dict[str, np.ndarray], key: str, path: str | os.PathLike, xlabel: str = "",
               log_x: bool = False, title: str = ""):
    """Figs 2 (right), 5, 6: d_opt and test log-likelihood against a swept variable, with
    error bars over repeats (from `vdjax.studies.sweeps.sweep_table`)."""
    x = table[key]
    fig, (a1, a2) = subplots(1, 2, figsize=(10, 3.6))
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
    return _finish(fig, path, title)


def plot_reliability(panels: list[tuple[str, dict]], path: str | os.PathLike, suptitle: str = ""):
    """Fig 10: reliability diagrams, one panel per (title, metrics with 'ece' and 'reliability').

    Bars: accuracy per confidence bin; hatched: the gap to the bin's mean confidence. The
    diagonal is perfect calibration: bars below it are overconfident, above it underconfident.
    ECE in each title.
    """
    fig, axes = subplots(1, len(panels), figsize=(3.3 * len(panels), 3.4), squeeze=False)
    for ax, (title, m) in zip(axes.flat, panels):
        t = m["reliability"]
        edges = np.asarray(t["edges"])
        centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
        filled = np.asarray(t["count"]) > 0
        ax.bar(centres[filled], np.asarray(t["accuracy"])[filled], width[filled], color="tab:blue",
               edgecolor="k", lw=0.5, label="accuracy")
        acc, conf = np.asarray(t["accuracy"])[filled], np.asarray(t["confidence"])[filled]
        ax.bar(centres[filled], np.abs(conf - acc), width[filled], bottom=np.minimum(acc, conf), color="tab:red",
               alpha=0.35, edgecolor="tab:red", hatch="//", label="gap to mean confidence")
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_title(f"{title}\nECE = {m['ece']:.3f}", fontsize=9)
    axes.flat[0].set_ylabel("accuracy")
    axes.flat[0].legend(fontsize=7, loc="upper left")
    return _finish(fig, path, suptitle)


_VARIANTS = (("ldn_full", "LDN-full", "o-"), ("ldn_95", "LDN-95", "s--"), ("ldn_expected", "LDN-expected", "^:"),
             ("ddn", "DDN", "d-"))


def plot_image_depth_scan(tables: dict[str, dict[str, np.ndarray]], path: str | os.PathLike, suptitle: str = ""):
    """Figs 4/9 (right): per data set, d_opt and test log-likelihood / error against max depth
    for LDN-full, LDN-95, LDN-expected and the DDN of that depth (from `image_runs.depth_table`)."""
    fig, axes = subplots(len(tables), 3, figsize=(13, 3.3 * len(tables)), squeeze=False)
    for row, (name, t) in zip(axes, tables.items()):
        x = t["max_depth"]
        row[0].errorbar(x, t["d_opt"], t["d_opt_std"], marker="o", capsize=3, label="d_opt (95% rule)")
        row[0].errorbar(x, t["d_expected"], t["d_expected_std"], marker="s", capsize=3, label="expected depth")
        row[0].plot(x, x, "k:", lw=0.8, label="d = D")
        row[0].set_ylabel(f"{name}\nlearnt depth")
        for ax, metric, label in ((row[1], "log_lik", "test log-likelihood"), (row[2], "error", "test error")):
            for key, name_, style in _VARIANTS:
                y = t[f"{key}_{metric}"]
                if np.all(np.isnan(y)):
                    continue
                ax.errorbar(x, y, t[f"{key}_{metric}_std"], fmt=style, capsize=3, ms=4, label=name_)
            ax.set_ylabel(label)
        for ax in row:
            ax.set_xlabel("max depth D")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    return _finish(fig, path, suptitle)


def plot_speedup(tables: dict[str, dict[str, np.ndarray]], path: str | os.PathLike):
    """Fig 11: proportional forward-pass speed-up of the pruned LDN over the DDN of the same D."""
    fig, ax = subplots(figsize=(5.5, 3.5))
    for name, t in tables.items():
        ok = ~np.isnan(t["speedup"])
        if ok.any():
            ax.errorbar(t["max_depth"][ok], 100 * t["speedup"][ok], 100 * t["speedup_std"][ok], marker="o",
                        capsize=3, label=name)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel("max depth D")
    ax.set_ylabel("forward pass faster by (%)")
    ax.set_title("pruned LDN (95% rule) vs DDN of depth D")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _finish(fig, path)


def plot_search_comparison(table: list[dict], path: str | os.PathLike):
    """The NAS comparison: per data set, final test log-likelihood against search + retraining
    wall time (log axis), and the chosen depth of every strategy (means and stds over seeds)."""
    datasets = list(dict.fromkeys(e["dataset"] for e in table))
    fig, axes = subplots(len(datasets), 2, figsize=(12, 3.8 * len(datasets)), squeeze=False)
    for row, name in zip(axes, datasets):
        es = [e for e in table if e["dataset"] == name]
        for i, e in enumerate(es):
            color = "k" if e["strategy"] == "ldn" else matplotlib.colormaps["tab10"](i % 10)
            row[0].errorbar(e["seconds"], e["log_lik"], yerr=e["log_lik_std"], fmt="o",
                            color=color, capsize=3)
            row[0].annotate(e["strategy"], (e["seconds"], e["log_lik"]), fontsize=7, xytext=(4, 3),
                            textcoords="offset points")
        row[0].set_xscale("log")
        row[0].set_xlabel("wall time of search + final training (s)")
        row[0].set_ylabel(f"{name}\nfinal test log-likelihood")
        row[0].grid(alpha=0.3)
        x = np.arange(len(es))
        row[1].bar(x, [e["depth"] for e in es], yerr=[e["depth_std"] for e in es], capsize=3,
                   color=["k" if e["strategy"] == "ldn" else "tab:blue" for e in es], alpha=0.7)
        row[1].set_xticks(x, [e["strategy"] for e in es], rotation=40, ha="right", fontsize=8)
        row[1].set_ylabel("chosen depth")
        row[1].grid(alpha=0.3, axis="y")
    return _finish(fig, path)
