"""Figures shared by the chapters. Each function is self-contained: it draws one figure and shows it.

Every figure has a title and labelled axes; the notebooks give each plot cell its alt text.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def plot_accuracy_curves(steps, curves: dict, title: str = "Test accuracy during training",
                         ylim: tuple = (0.8, 1.0)) -> None:
    """One line per network: ``curves={"label": accuracies}``, all recorded at ``steps``."""
    fig, ax = plt.subplots()
    for label, accuracies in curves.items():
        ax.plot(steps, accuracies, label=label, linewidth=1.2)
    ax.set_ylim(*ylim)
    ax.set_xlabel("training step")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    plt.show()


def plot_percentile_bands(steps, panels: dict, percentiles=(15, 50, 85),
                          title: str = "One sigmoid input over training") -> None:
    """BN2015 Figure 1(b, c): percentiles over the test set of one unit's input, side by side.

    ``panels={"panel title": values}`` where ``values`` has shape (len(steps), n_test_examples):
    the unit's input for every test example at every recorded step. The panels share the y axis,
    so their spreads compare at a glance.
    """
    fig, axes = plt.subplots(1, len(panels), sharey=True, figsize=(9.6, 3.6))
    axes = np.atleast_1d(axes)
    for ax, (panel_title, values) in zip(axes, panels.items()):
        bands = np.percentile(values, percentiles, axis=1)
        for percentile, band in zip(percentiles, bands):
            ax.plot(steps, band, linewidth=1.0, label=f"{percentile}th percentile")
        ax.set_title(panel_title)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("sigmoid input")
    axes[-1].legend(loc="lower right", fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    plt.show()


def plot_unit_means(steps, panels: dict, title: str = "Mean sigmoid input of five units") -> None:
    """One line per unit: ``panels={"panel title": means}``, ``means`` of shape (len(steps), units).

    The panels share the y axis, so how much each network's units wander compares at a glance.
    """
    fig, axes = plt.subplots(1, len(panels), sharey=True, figsize=(9.6, 3.6))
    axes = np.atleast_1d(axes)
    for ax, (panel_title, means) in zip(axes, panels.items()):
        for unit in range(means.shape[1]):
            ax.plot(steps, means[:, unit], linewidth=1.0, label=f"unit {unit}")
        ax.set_title(panel_title)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean over the test set")
    axes[-1].legend(loc="lower right", fontsize="small", ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    plt.show()


def plot_curves_log_x(x, curves: dict, *, title: str, xlabel: str, ylabel: str,
                      ylim: tuple | None = None, styles: dict | None = None,
                      bands: dict | None = None) -> None:
    """One line per entry of ``curves={"label": y_values}`` against ``x`` on a logarithmic x axis.

    For quantities that change fastest early (training steps) or span decades (batch sizes).
    ``styles={"label": {matplotlib line keywords}}`` overrides the look of chosen lines.
    ``bands={"label": (low, high)}`` shades the range from ``low`` to ``high`` around a line in
    its colour (e.g. the worst and the best seed around the mean over seeds).
    """
    fig, ax = plt.subplots()
    for label, values in curves.items():
        (line,) = ax.plot(x, values, label=label, linewidth=1.2, marker="o", markersize=3,
                          **(styles or {}).get(label, {}))
        if bands and label in bands:
            low, high = bands[label]
            ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xscale("log")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    plt.show()


def plot_moving_averages(steps, batch_values, averages: dict, exact: float, *, title: str,
                         ylabel: str) -> None:
    """A statistic's value in each training batch (grey), its moving averages (one line per
    ``averages={"label": values}``) and the exact value over the training set after training."""
    fig, ax = plt.subplots()
    ax.plot(steps, batch_values, color="0.75", linewidth=0.5, label="batch statistic")
    for label, values in averages.items():
        ax.plot(steps, values, linewidth=1.2, label=label)
    ax.axhline(exact, color="black", linestyle="--", linewidth=1.0,
               label="exact, after training")
    ax.set_xscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    fig.set_size_inches(8.8, 3.6)
    fig.tight_layout()
    plt.show()


# ---- Chapter 1: the transform by hand ---------------------------------------------------------

def plot_histograms_before_after(before, after, band: tuple | None = None, band_label: str = "",
                                 xlabel: str = "value",
                                 title: str = "One feature over a mini-batch") -> None:
    """Two histograms side by side on the same x axis: a feature before and after normalising.

    ``band=(low, high)`` shades a range of x on both panels (e.g. where a sigmoid is not
    saturated), labelled ``band_label``.
    """
    before, after = np.asarray(before).ravel(), np.asarray(after).ravel()
    low = min(before.min(), after.min(), band[0] if band else np.inf)
    high = max(before.max(), after.max(), band[1] if band else -np.inf)
    bins = np.linspace(low, high, 81)
    fig, axes = plt.subplots(1, 2, sharex=True, sharey=True, figsize=(9.6, 3.6))
    for ax, values, panel_title in zip(axes, (before, after), ("before BN", "after BN")):
        if band:
            ax.axvspan(*band, color="tab:green", alpha=0.15, label=band_label)
        ax.hist(values, bins=bins, color="tab:blue")
        ax.set_title(panel_title)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("examples in the batch")
    if band and band_label:
        axes[0].legend(loc="upper left", fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    plt.show()


def plot_feature_stats(before, after, title: str = "Every feature's mean and standard deviation "
                       "over the mini-batch") -> None:
    """Per-feature mean (left) and standard deviation (right) of a (batch, features) array, before
    and after normalising."""
    before, after = np.asarray(before), np.asarray(after)
    features = np.arange(before.shape[1])
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.6))
    for ax, stat, name in zip(axes, (np.mean, np.std), ("mean", "standard deviation")):
        ax.plot(features, stat(before, axis=0), "o", markersize=3, label="before BN")
        ax.plot(features, stat(after, axis=0), "o", markersize=3, label="after BN")
        ax.set_title(name)
        ax.set_xlabel("feature")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("over the batch")
    axes[1].set_ylim(bottom=0)
    axes[1].legend(loc="center right", bbox_to_anchor=(1.0, 0.3), fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    plt.show()
