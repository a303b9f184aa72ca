"""Static Pareto plots (matplotlib, Agg backend) for papers and READMEs."""

from __future__ import annotations

import re
from pathlib import Path

from peftbench.analysis.comparison import Comparison, frontier_view
from peftbench.analysis.metrics import Metric, format_value, get_metric

FRONTIER_COLOR, NOISE_COLOR, DOMINATED_COLOR = "#1a9e5a", "#d98a00", "#8a95a5"


def _plain(text: str) -> str:
    """Result-file strings are shown as they are: `$` would start matplotlib's math mode."""
    return text.replace("$", r"\$")


def _interval(point, metric: Metric) -> tuple[float, float]:
    value = point.values[metric.name]
    return value.mean - value.low, value.high - value.mean


def plot_pair(comparison: Comparison, x: Metric, y: Metric, path: Path) -> Path:
    """One scatter of y against x with the frontier line, seed error bars and frontier labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    view = frontier_view(comparison.points, [x, y]) if (x, y) != (comparison.x, comparison.y) else comparison.pair
    frontier = set(view.frontier.frontier)
    points = [p for p in comparison.points if p.name not in view.frontier.missing]
    fig, ax = plt.subplots(figsize=(9, 6), dpi=150)
    label_offsets = [(6, -12), (-10, 8)]  # alternate below-right / above-left so neighbours do not overlap
    ordered_frontier = sorted((p for p in points if p.name in frontier), key=lambda p: p.mean(x.name))
    for point in points:
        on_frontier = point.name in frontier
        color = NOISE_COLOR if point.name in view.within_noise else FRONTIER_COLOR if on_frontier else DOMINATED_COLOR
        x_interval, y_interval = _interval(point, x), _interval(point, y)
        ax.errorbar(
            point.mean(x.name), point.mean(y.name),
            xerr=[[v] for v in x_interval] if any(x_interval) else None,
            yerr=[[v] for v in y_interval] if any(y_interval) else None,
            fmt="o", color=color, ecolor="#9aa4b2", elinewidth=1, capsize=2,
            markersize=7 if on_frontier else 5, alpha=1 if on_frontier else 0.7, zorder=3 if on_frontier else 2,
        )  # fmt: skip
        if on_frontier:
            offset = label_offsets[ordered_frontier.index(point) % 2]
            ax.annotate(_plain(point.name), (point.mean(x.name), point.mean(y.name)), fontsize=7, color="#3a4656",
                        xytext=offset, textcoords="offset points", ha="left" if offset[0] > 0 else "right")  # fmt: skip
    for task in {p.task for p in points}:
        line = sorted((p for p in points if p.name in frontier and p.task == task), key=lambda p: p.mean(x.name))
        ax.plot([p.mean(x.name) for p in line], [p.mean(y.name) for p in line], color=FRONTIER_COLOR, lw=1.5, zorder=1)
    for axis, metric in ((ax.xaxis, x), (ax.yaxis, y)):
        axis.set_major_formatter(FuncFormatter(lambda value, _pos, metric=metric: format_value(metric, value)))
    arrow = {True: "higher is better", False: "lower is better"}
    ax.set_xlabel(f"{x.label} ({arrow[x.higher_is_better]})")
    ax.set_ylabel(f"{y.label} ({arrow[y.higher_is_better]})")
    ax.set_title(f"Pareto frontier: {y.label} vs {x.label} ({len(frontier)} of {len(points)} points on it)")
    ax.grid(True, color="#e3e7ee")
    ax.text(0.01, -0.12, comparison.noise_summary, transform=ax.transAxes, fontsize=7, color="#5f6b7a", wrap=True)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    fig.savefig(temp, format="png")
    plt.close(fig)
    temp.replace(path)
    return path


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", text.lower())


def write_pngs(comparison: Comparison, folder: str | Path) -> list[Path]:
    """The report's pair, plus y against each other metric of the multi-metric frontier."""
    folder = Path(folder)
    pairs = [(comparison.x, comparison.y)]
    if comparison.multi is not None:
        pairs += [(m, comparison.y) for m in comparison.multi.metrics if m not in (comparison.x, comparison.y)]
    written = []
    for x, y in pairs:
        written.append(plot_pair(comparison, get_metric(x.name), y, folder / f"pareto_{_slug(y.name)}_vs_{_slug(x.name)}.png"))
    return written
