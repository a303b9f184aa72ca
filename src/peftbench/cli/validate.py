"""`peftbench validate`: how well an offline task ranks PEFT's configs the way the published GPU results do."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Optional

import typer

HELP = """Rank agreement of an offline task with reference (published GPU) results: Spearman and Kendall with 95%
bootstrap intervals over configs, over all configs and over those that learn, on both halves of a fixed split of
the methods ("choose": recipe changes are chosen on it; "report": they are judged on it); the seed noise per
config, and the noise ceiling (the agreement between two independent offline runs: the seed halves).

With --experiments (a PEFT suite's experiments/ folder) it first runs every config there that has a reference
result (every config, for a task without one), for each seed (resumable: finished runs are kept); without it, it analyses the results folder only.
The recipe is saved in the results folder (validity-recipe.json); one folder holds one recipe. docs/validity.md.

Example: peftbench validate --task math-tiny --results results/validity --experiments published --steps 120
--test-size 300 --seeds 0,1; peftbench validate --task image-tiny --results results/validity-image --experiments
published --seeds 0,1
"""


def register(app: typer.Typer) -> None:
    app.command("validate", help=HELP)(validate)


def validate(
    results: Annotated[Path, typer.Option(help="Folder of the offline runs' result files (written with --experiments).")],
    task: Annotated[str, typer.Option(help="Offline task: math-tiny or image-tiny.")] = "math-tiny",
    reference: Annotated[Optional[Path], typer.Option(help="Reference results (files or folder, PEFT's or peftbench's format). Default for math-tiny: the published MetaMathQA results shipped in the package; image-tiny has none (seed noise and noise ceiling only).")] = None,
    experiments: Annotated[Optional[Path], typer.Option(help="Run the configs of this PEFT suite experiments/ folder first (those with a reference result; all, without one); 'published': the PEFT suite's configs shipped in the package (MetaMathQA for math-tiny, image-gen for image-tiny).")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Training steps of every run (default: the task's).", min=1)] = None,
    test_size: Annotated[Optional[int], typer.Option(help="Test items of every run (default: the task's).", min=1)] = None,
    lr_policy: Annotated[Optional[str], typer.Option(help="scaled: each config's rate x (task default rate / suite default rate), math-tiny's default; configured: the config's rate as is, image-tiny's default; sweep: the rate a sweep chose (--lr-from).")] = None,
    lr_from: Annotated[Optional[Path], typer.Option(help="With --lr-policy sweep: the sweep-summary.json whose chosen_lr each config runs at.")] = None,
    seeds: Annotated[Optional[str], typer.Option(help="Comma-separated training seeds: those run with --experiments (default 0,1; two or more for the noise ceiling); without it, those analysed (default: all in the folder).")] = None,
    only: Annotated[Optional[str], typer.Option(help="Run only configs whose '<method>/<name>' contains one of these comma-separated strings.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="A training parameter for every run, e.g. --set test_repeats=12 (repeatable).")] = None,
    workers: Annotated[int, typer.Option(help="Runs at once (one torch thread each).", min=1)] = 2,
    rank_by: Annotated[Optional[str], typer.Option(help="What the offline runs rank configs by: test (each run's test score) or train_loss (its final train loss, lower ranking higher; one pass over fresh rows makes it a held-out loss). Default: the task's (math-tiny: train_loss, image-tiny: test).")] = None,
    learns_above: Annotated[Optional[float], typer.Option(help="A config learns when its mean score over seeds is at least this (default: the task's, printed).")] = None,
    table: Annotated[bool, typer.Option("--table", help="Also print every config's scores.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON object instead of the text report.")] = False,
) -> None:
    import importlib.util

    from peftbench.config import ConfigError, parse_set_options
    from peftbench.validity.protocol import Recipe, protocol_of

    if importlib.util.find_spec("scipy") is None:
        typer.echo("error: peftbench validate needs scipy (its rank statistics): pip install 'scipy>=1.11'", err=True)
        raise typer.Exit(2)
    from peftbench.validity.protocol import validate as run_validation

    try:
        recipe = None
        if experiments is not None and str(experiments) == "published":
            experiments = protocol_of(task).experiments
        if experiments is not None:
            protocol = protocol_of(task)
            recipe = Recipe(task=task, seeds=_seeds(seeds or "0,1"), steps=steps, test_size=test_size,
                            lr_policy=lr_policy or protocol.lr_policy, lr_from=str(lr_from) if lr_from else None,
                            overrides=parse_set_options(set_ or []))
            if recipe.lr_policy == "sweep" and lr_from is None:
                raise ConfigError("--lr-policy sweep needs --lr-from SWEEP_SUMMARY")
        report = run_validation(task, results, reference=reference, recipe=recipe, experiments=experiments,
                                workers=workers, only=[part for part in (only or "").split(",") if part],
                                learns_above=learns_above, rank_by=rank_by,
                                seeds=_seeds(seeds) if seeds and experiments is None else None)
    except ConfigError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    if json_out:
        typer.echo(json.dumps(report.to_dict(), indent=2, allow_nan=False))
    else:
        for line in render(report, table=table):
            typer.echo(line)
    if not report.rows:
        raise typer.Exit(1)


def _seeds(text: str) -> tuple[int, ...]:
    from peftbench.config import ConfigError

    try:
        seeds = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1") from None
    if not seeds:
        raise ConfigError("--seeds: give at least one seed")
    return seeds


def render(report, *, table: bool = False) -> list[str]:
    """The text report, line by line."""
    from peftbench.validity.agreement import CHOOSE, REPORT
    from peftbench.validity.protocol import RANK_BY

    recipe = report.recipe.describe() if report.recipe else "not recorded in this folder"
    lines = [f"validity of {report.task} ({report.results}); recipe: {recipe}",
             f"reference: {report.reference or 'none (seed noise and noise ceiling only)'}",
             f"configs: {len(report.rows)} with offline scores{' and a reference result' if report.reference else ''}; "
             f"{report.n_learn} learn ({report.learns_rule})",
             f"offline ranking: by {RANK_BY[report.rank_by]} (--rank-by {report.rank_by})",
             f"split of methods: sha256(method name), first byte even -> {CHOOSE}, odd -> {REPORT}"]
    if report.agreement:
        lines.append("rank agreement with the reference (mean over seeds; 95% bootstrap interval over configs):")
        for subset, label in (("all", "all configs"), ("learn", "configs that learn")):
            for half, agreement in report.agreement[subset].items():
                name = f"{label}, {half} half" if half != "both" else label
                lines.append(f"  {name:<32} n={agreement.n:<3} Spearman {agreement.spearman.text()}  "
                             f"Kendall {agreement.kendall.text()}")
    lines.append("noise ceiling (Spearman between the seed halves; 95% interval):")
    for subset, label in (("all", "all configs"), ("learn", "configs that learn")):
        ceiling = report.ceiling[subset]
        if ceiling is None:
            lines.append(f"  {label:<32} not measured: fewer than two seeds")
            continue
        halves = " vs ".join(",".join(map(str, half)) for half in ceiling.halves)
        lines.append(f"  {label:<32} n={ceiling.agreement.n:<3} seeds {halves}: Spearman {ceiling.agreement.spearman.text()}  "
                     f"Kendall {ceiling.agreement.kendall.text()}; all seeds' mean vs a noise-free reference "
                     f"at most about {_number(ceiling.bound_vs_noise_free_reference)} (Spearman-Brown)")
    lines.append("seed noise (sample sd over seeds, median over configs with two seeds or more):")
    for subset, label in (("all", "all configs"), ("learn", "configs that learn")):
        noise = report.noise[subset]
        lines.append(f"  {label:<32} n={noise.n_configs:<3} median sd {_number(noise.median_sd, 3)} (max "
                     f"{_number(noise.max_sd, 3)}); spread of the config means {_number(noise.spread, 3)} = "
                     f"{_number(noise.spread_per_sd, 1)} x the median sd")
    runs = report.runs
    lines.append(f"runs: {runs.cpu_s / 60:.1f} CPU min, {runs.wall_s / 60:.1f} min from first start to last end; "
                 f"precision {', '.join(sorted(runs.precisions)) or 'unknown'}")
    if runs.not_scored:
        lines.append(f"not scored ({len(runs.not_scored)}): " + "; ".join(f"{k} ({v})" for k, v in sorted(runs.not_scored.items())[:8])
                     + (" ..." if len(runs.not_scored) > 8 else ""))
    if report.unmatched:
        lines.append(f"without a reference result ({len(report.unmatched)}): {', '.join(report.unmatched[:8])}")
    if table:
        ranked = "test score" if report.rank_by == "test" else "final train loss"
        lines.append(f"| config | half | offline {ranked} by seed | mean | sd | offline test score (mean) | reference |")
        lines.append("|---|---|---|---|---|---|---|")
        for row in sorted(report.rows, key=lambda r: -(r.reference if not math.isnan(r.reference) else r.test_mean)):
            scores = " / ".join(f"{row.scores[s]:.3f}" for s in sorted(row.scores))
            lines.append(f"| {row.config} | {row.half} | {scores} | {row.mean:.3f} | {_number(row.sd, 3)} | "
                         f"{row.test_mean:.3f} | {_number(row.reference, 3)} |")
    return lines


def _number(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or math.isnan(value) or math.isinf(value) else f"{value:.{digits}f}"
