"""Static Pareto plots (matplotlib, Agg backend) for papers and READMEs."""

from __future__ import annotations

import re
from pathlib import Path

from peftbench.analysis.comparison import Comparison, frontier_view
from peftbench.analysis.metrics import Metric, axis_unit, format_value, get_metric

FRONTIER_COLOR, NOISE_COLOR, DOMINATED_COLOR = "#1a9e5a", "#d98a00", "#8a95a5"
MAX_LABELLED = 20  # with more points, only the frontier is named


def _plain(text: str) -> str:
    """Result-file strings are shown as they are: `$` would start matplotlib's math mode."""
    return text.replace("$", r"\$")


def _interval(point, metric: Metric) -> tuple[float, float]:
    value = point.values[metric.name]
    return value.mean - value.low, value.high - value.mean


def _spans_decades(values: list[float]) -> bool:
    return bool(values) and min(values) > 0 and max(values) / min(values) > 1000


def _label_points(ax, labelled: list[tuple[str, tuple[float, float], str]]) -> None:
    """Name points to their right, alternately above and below, in the order given (the frontier first), and
    skip a label that would sit on top of one already placed; the HTML report names every point on hover."""
    placed: list[tuple[float, float]] = []
    for index, (text, position, color) in enumerate(labelled):
        dy = 5 if index % 2 == 0 else -11
        px, py = ax.transData.transform(position)
        py += dy * ax.figure.dpi / 72
        if any(abs(py - qy) < 11 * ax.figure.dpi / 72 and abs(px - qx) < 160 * ax.figure.dpi / 72 for qx, qy in placed):
            continue
        placed.append((px, py))
        ax.annotate(text, position, fontsize=7, color=color, xytext=(7, dy), textcoords="offset points",
                    annotation_clip=False)  # fmt: skip


def plot_pair(comparison: Comparison, x: Metric, y: Metric, path: Path) -> Path:
    """One scatter of y against x with the frontier line, seed error bars and frontier labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator

    view = frontier_view(comparison.points, [x, y]) if (x, y) != (comparison.x, comparison.y) else comparison.pair
    frontier = set(view.frontier.frontier)
    points = [p for p in comparison.points if p.name not in view.frontier.missing]
    # Plot in one readable unit per axis (GiB, min, M) so that the ticks land on round numbers.
    x_log, y_log = _spans_decades([p.mean(x.name) for p in points]), _spans_decades([p.mean(y.name) for p in points])
    x_scale, x_suffix = (1.0, "") if x_log else axis_unit(x, [p.mean(x.name) for p in points])
    y_scale, y_suffix = (1.0, "") if y_log else axis_unit(y, [p.mean(y.name) for p in points])

    def xy(point) -> tuple[float, float]:
        return point.mean(x.name) / x_scale, point.mean(y.name) / y_scale

    fig, ax = plt.subplots(figsize=(10, 6.5), dpi=150)
    ordered_frontier = sorted((p for p in points if p.name in frontier), key=lambda p: p.mean(x.name))
    for point in points:
        on_frontier = point.name in frontier
        color = NOISE_COLOR if point.name in view.within_noise else FRONTIER_COLOR if on_frontier else DOMINATED_COLOR
        x_interval = [v / x_scale for v in _interval(point, x)]
        y_interval = [v / y_scale for v in _interval(point, y)]
        ax.errorbar(
            *xy(point),
            xerr=[[v] for v in x_interval] if any(x_interval) else None,
            yerr=[[v] for v in y_interval] if any(y_interval) else None,
            fmt="o", color=color, ecolor="#9aa4b2", elinewidth=1, capsize=2,
            markersize=7 if on_frontier else 5, alpha=1 if on_frontier else 0.7, zorder=3 if on_frontier else 2,
        )  # fmt: skip
    for task in {p.task for p in points}:
        line = [xy(p) for p in ordered_frontier if p.task == task]
        ax.plot([v[0] for v in line], [v[1] for v in line], color=FRONTIER_COLOR, lw=1.5, zorder=1)
    for axis, set_scale, metric, log in ((ax.xaxis, ax.set_xscale, x, x_log), (ax.yaxis, ax.set_yscale, y, y_log)):
        if log:  # sizes spanning decades: log axis, ticks at 1 KiB, 1 MiB, ... (or powers of ten)
            set_scale("log")
            axis.set_major_locator(LogLocator(base=1024 if metric.unit == "bytes" else 10))
            axis.set_major_formatter(FuncFormatter(lambda value, _pos, metric=metric: format_value(metric, value)))
    left, right = ax.get_xlim()
    if ax.get_xscale() == "log":
        ax.set_xlim(left, right * (right / left) ** 0.2)  # room for the labels of the rightmost points
    else:
        ax.set_xlim(left, right + (right - left) * 0.2)
    # every point is named when there are few (the frontier's names win where labels would collide)
    dominated = sorted((p for p in points if p.name not in frontier), key=lambda p: p.mean(y.name),
                       reverse=y.higher_is_better)  # the best of them first
    _label_points(ax, [(_plain(p.name), xy(p), "#3a4656") for p in ordered_frontier]
                  + ([(_plain(p.name), xy(p), "#8a95a5") for p in dominated] if len(points) <= MAX_LABELLED else []))
    from matplotlib.lines import Line2D

    legend = [(FRONTIER_COLOR, "on the frontier"), (DOMINATED_COLOR, "dominated")]
    if view.within_noise:
        legend.insert(1, (NOISE_COLOR, "on the frontier only within noise"))
    ax.legend(handles=[Line2D([], [], marker="o", ls="", color=color, label=text) for color, text in legend],
              fontsize=7, loc="best", frameon=False)
    arrow = {True: "higher is better", False: "lower is better"}
    ax.set_xlabel(f"{x.label}{f' [{x_suffix}]' if x_suffix else ''} ({arrow[x.higher_is_better]})")
    ax.set_ylabel(f"{y.label}{f' [{y_suffix}]' if y_suffix else ''} ({arrow[y.higher_is_better]})")
    ax.set_title(f"Pareto frontier: {y.label} vs {x.label} ({len(frontier)} of {len(points)} points on it)")
    ax.grid(True, color="#e3e7ee")
    fig.text(0.01, 0.01, comparison.noise_summary, fontsize=7, color="#5f6b7a")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
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
