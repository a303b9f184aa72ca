"""Terminal output: rich tables of the frontier and of all points, sorted, coloured, human units.

Every string from a result file goes into a `rich.text.Text`, never into markup, so a name such as
`[bold red]x` prints as itself.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from peftbench.analysis.comparison import Comparison, FrontierView, frontier_note
from peftbench.analysis.metrics import Metric, format_value, get_metric
from peftbench.analysis.points import Point, points_by_task

# Columns shown besides the chosen pair, when the points have them.
NARROW_WIDTH = 120
CONTEXT_METRICS = ["test_score", "peak_memory", "peak_memory_process", "train_time", "file_size", "trainable_params", "forgetting",
                   "inference_overhead"]


def format_with_interval(point: Point, metric: Metric) -> str:
    value = point.values.get(metric.name)
    if value is None:
        return "-"
    text = format_value(metric, value.mean)
    if value.low != value.high:
        half_width = (value.high - value.low) / 2
        text += f" ±{format_value(metric, half_width).lstrip('+')}"
    return point.shown(metric.name, text)


def _columns(comparison: Comparison, width: int) -> list[Metric]:
    """The chosen pair first, then as many context metrics as the terminal has room for."""
    chosen = [comparison.y, comparison.x]
    extra = [get_metric(m) for m in CONTEXT_METRICS if get_metric(m) not in chosen]
    extra = [m for m in extra if any(p.mean(m.name) is not None for p in comparison.points)]
    room = max(0, (width - 110) // 14)
    return chosen + extra[:room]


def _sort_key(point: Point, metric: Metric) -> tuple:
    value = point.mean(metric.name)
    if value is None:
        return (1, 0.0, point.name)
    return (0, -value if metric.higher_is_better else value, point.name)


NOTE_STYLES = {"missing": "yellow", "dominated": "dim", "within_noise": "yellow", "tie": "cyan", "frontier": "green"}


def _note(point: Point, view: FrontierView) -> Text:
    kind, sentence = frontier_note(point.name, view)
    return Text(sentence, style=NOTE_STYLES[kind])


def _points_table(
    comparison: Comparison, view: FrontierView, points: list[Point], title: Text, width: int
) -> Table:
    columns = _columns(comparison, width)
    table = Table(title=title, title_justify="left", header_style="bold", show_lines=False, expand=False)
    table.add_column("", width=1)
    table.add_column("experiment", overflow="fold", min_width=24, max_width=60)
    for metric in columns:
        arrow = "↑" if metric.higher_is_better else "↓"
        table.add_column(f"{metric.label} {arrow}", justify="right", no_wrap=True)
    table.add_column("runs", justify="right")
    # In a narrow terminal the note goes under the name instead of into a column of its own.
    narrow = width < NARROW_WIDTH
    if not narrow:
        table.add_column("note", overflow="fold", max_width=60)
    on_frontier = set(view.frontier.frontier)
    for point in sorted(points, key=lambda p: _sort_key(p, comparison.y)):
        style = "bold green" if point.name in on_frontier else ""
        if point.name in view.within_noise:
            style = "bold yellow"
        name, note = Text(point.name, style=style), _note(point, view)
        if narrow:
            name = Text.assemble(name, "\n", note)
        table.add_row(
            Text("★" if point.name in on_frontier else "", style=style),
            name,
            *[format_with_interval(point, metric) for metric in columns],
            str(len(point.runs)),
            *([] if narrow else [note]),
        )
    return table


def print_comparison(comparison: Comparison, console: Console | None = None) -> None:
    """Print warnings, the frontier table, the table of all points and how far the noise is known."""
    console = console or Console()
    for warning in comparison.warnings:
        console.print(Text(f"warning: {warning}", style="yellow"), soft_wrap=True)
    if comparison.ignored:
        console.print(Text(f"note: {len(comparison.ignored)} JSON file(s) are not result files; ignored", style="dim"))
    if comparison.filter_text:
        console.print(
            Text(f"filter {comparison.filter_text!r}: {len(comparison.points)} kept, "
                 f"{len(comparison.filtered_out)} left out", style="dim")
        )
    if not comparison.points:
        console.print(Text("No usable results: nothing to compare.", style="bold red"))
        return
    pair = comparison.pair
    tasks = points_by_task(comparison.points)
    for task, points in tasks.items():
        # each task's frontier is its own: one table per task, so that no ranking reads across tasks
        of_task = f" on task {task}" if len(tasks) > 1 else ""
        title = Text(f"Pareto frontier{of_task}: {comparison.y.label} vs {comparison.x.label}")
        frontier_points = [p for p in points if p.name in set(pair.frontier.frontier)]
        console.print(_points_table(comparison, pair, frontier_points, title, console.width))
        all_title = Text(f"All {len(points)} points{of_task}, best {comparison.y.label} first")
        console.print(_points_table(comparison, pair, points, all_title, console.width))
        if comparison.multi is not None:
            multi = comparison.multi
            names = {p.name for p in points}
            console.print(
                Text(f"Frontier{of_task} over {', '.join(m.label for m in multi.metrics)}: ", style="bold"),
                Text(", ".join(n for n in multi.frontier.frontier if n in names) or "(none)"),
            )
            for name, other in multi.within_noise.items():
                if name in names:
                    console.print(Text(f"  {name}: on that frontier only within noise of {other}", style="yellow"))
    console.print(Text(comparison.noise_summary, style="italic"))
