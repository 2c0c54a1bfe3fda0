"""A picture of a tuning run: time of every trial and the best so far, failures marked."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence


def plot_history(trials: Sequence[dict], path: str | Path, title: str = "") -> Path:
    """Save a plot of ``trials`` (rows of ``TuneResult.trials``: number, status, time_s) to ``path``
    (format from the suffix: .png, .svg, .pdf). Times are shown in milliseconds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [(t["number"], t["time_s"] * 1e3) for t in trials if t["status"] == "ok" and t["time_s"] is not None]
    bad = [t for t in trials if t["status"] != "ok"]
    fig, ax = plt.subplots(figsize=(7, 4))
    if ok:
        xs, ys = zip(*ok)
        ax.scatter(xs, ys, s=18, label="trial (ms per call)")
        best, run = math.inf, []
        for x, y in ok:
            best = min(best, y)
            run.append(best)
        ax.step(xs, run, where="post", color="C1", label="best so far")
    if bad:
        top = max((y for _, y in ok), default=1.0)
        ax.scatter([t["number"] for t in bad], [top * 1.1] * len(bad), marker="x", color="C3",
                   label=f"failed / wrong / illegal ({len(bad)})")
    if ok and max(y for _, y in ok) > 20 * min(y for _, y in ok):
        ax.set_yscale("log")  # one slow outlier must not flatten the rest
    ax.set_xlabel("trial")
    ax.set_ylabel("ms per call")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
