"""`peftbench init-task`: a commented task file written from a data file's columns.

The guesses (which column is the prompt, which the target, whether a list column makes it multiple
choice) only fill in a starting point; the comments say what each key means and what else is valid.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

# Column names that usually hold the prompt / the answer, most likely first.
PROMPT_NAMES = ("question", "prompt", "input", "query", "instruction", "text", "sentence", "context", "ticket")
TARGET_NAMES = ("answer", "target", "label", "output", "response", "completion", "solution", "gold", "category")
CHOICE_NAMES = ("choices", "options", "candidates", "endings")
GUESS_ROWS = 50  # the rows whose targets decide the metric
NUMBER_AT_END = re.compile(r"-?[\d,]*\.?\d+\W*$")


def _pick(columns: list[str], preferred: tuple[str, ...], exclude: set[str]) -> str | None:
    lowered = {c.lower(): c for c in columns if c not in exclude}
    for name in preferred:
        if name in lowered:
            return lowered[name]
    for name in preferred:  # a column whose name contains a preferred word (e.g. "customer_question")
        for low, column in lowered.items():
            if name in low:
                return column
    return None


def starter_text(data_file: Path, task_file: Path, rows: list[dict[str, Any]], model: str) -> str:
    """The task file's text for `data_file` (relative to where the task file will be)."""
    columns = list(rows[0]) if rows else []
    choice = next((c for c in columns if isinstance(rows[0][c], list)), None) or _pick(columns, CHOICE_NAMES, set())
    choice = choice if choice is not None and isinstance(rows[0].get(choice), list) else None
    text_columns = [c for c in columns if c != choice]
    prompt = _pick(text_columns, PROMPT_NAMES, set()) or (text_columns[0] if text_columns else "FIELD")
    target = _pick(text_columns, TARGET_NAMES, {prompt}) or (
        next((c for c in text_columns if c != prompt), "FIELD")
    )
    relative = os.path.relpath(data_file.resolve(), task_file.resolve().parent)
    example = json.dumps(rows[0], ensure_ascii=False) if rows else "{}"
    if len(example) > 300:
        example = example[:297] + "..."
    lines = [
        f"# peftbench task file, written by `peftbench init-task` from {data_file.name}.",
        "# Run it with: peftbench run EXPERIMENT... --task " + task_file.name + "   (docs/custom-task.md)",
        f"# The data's columns: {', '.join(columns)}",
        f"# First row: {example}",
        "",
        f"task: {task_file.stem}",
        "",
        "# The base model: a hub id (org/name), a local folder (relative to this file), or",
        "# builtin:tiny-math-llama, the tiny model shipped with peftbench (offline, CPU).",
        f"model: {model}",
        "",
        "# The data: {train: FILE, valid: FILE, test: FILE} (JSON, JSONL, CSV, Parquet or hub ids), or one file",
        "# and the shares (fraction) or row counts that valid and test take from it, with a seed.",
        "data:",
        f"  file: {relative}",
        "  split: {valid: 0.1, test: 0.2}",
        "  seed: 0",
        "",
        "# A row becomes a prompt and a target. Templates use {field} (or lm-eval's Jinja {{field}}); a bare",
        "# column name means that column. The loss is on the target only (target_delimiter + doc_to_target).",
        f'doc_to_text: "{{{prompt}}}\\nAnswer:"',
        f"doc_to_target: {target}",
        "# target_delimiter: \" \"        # between prompt and target (default \" \"; \"\" with a chat template)",
        "# apply_chat_template: true     # render the prompt as a user message through the tokenizer's template",
        "# system_instruction: \"...\"     # the system message, with apply_chat_template",
        "",
    ]
    if choice is not None:
        lines += [
            "# Multiple choice: each option's log-likelihood after the prompt; the likeliest is the answer.",
            "# doc_to_target gives the right option (its text or its index); doc_to_choice the options' field.",
            "output_type: multiple_choice",
            f"doc_to_choice: {choice}",
            "metric: acc                      # or acc_norm (log-likelihood per byte of the option)",
        ]
    else:
        lines += [
            "# Generation: greedy, until EOS, max_gen_toks or an `until` string; then scored by `metric`:",
            "# exact_match | last_number | final_answer | regex | contains | f1 | rouge | module:function (a .py",
            "# file beside this one; the function gets (prediction, row) and returns a bool or a number in [0, 1]).",
            "output_type: generate_until",
            *_scoring_guess([str(row[target]) for row in rows if row.get(target) is not None]),
        ]
    lines += [
        "",
        "# Forgetting: the change in loss on held-out text after training. default (the base model's",
        "# pretraining-like text: the shipped model's own, else 100 rows of HuggingFaceFW/finewiki), none,",
        "# or a text file (one text per line) / a data file with a `text` column.",
        "forgetting: default",
        "",
        "# Defaults for any training parameter (docs/engine.md); an experiment's training_params.json and --set",
        "# override them.",
        "training_params:",
        "  max_steps: 200",
        "  eval_steps: 100",
        "  batch_size: 8",
        "  max_seq_length: 256",
        "",
        "# lm-evaluation-harness tasks to run after training, adapter on and off (pip install peftbench[harness]):",
        "# harness_tasks: [hellaswag, arc_easy]",
        "",
    ]
    return "\n".join(lines)


def _scoring_guess(targets: list[str]) -> list[str]:
    """The metric and generation lines for these targets: a worked solution is scored on its final answer
    (exact match of a whole solution would never succeed), a one-line short answer on exact match."""
    if targets and all("####" in t or "The answer is" in t for t in targets):
        metric = "final_answer   # the answer after the last '#### ' / 'The answer is', as GSM8K is scored"
    elif targets and all(NUMBER_AT_END.search(t) for t in targets) and any(len(t.split()) > 3 for t in targets):
        metric = "last_number    # the solution's last number against the target's"
    elif any("\n" in t for t in targets):
        metric = "f1   # token overlap, as for free text (exact_match: whole answers only)"
    else:
        return ["metric: exact_match",
                "metric_args: {ignore_case: true}   # exact_match: ignore_case, ignore_punctuation, regexes_to_ignore",
                "generation_kwargs:", "  until: [\"\\n\"]", "  max_gen_toks: 64"]
    # until EOS, with room for twice the longest target in tokens (about four characters each), in whole 32s
    longest = max(len(t) for t in targets)
    return [f"metric: {metric}", "generation_kwargs:", f"  max_gen_toks: {min(512, max(64, -(-longest // 64) * 32))}"]


def write_starter_task_file(task_file: Path, data: Path, model: str, force: bool = False) -> None:
    """Write `task_file`, a starter for `data`'s columns, only once it has been checked as `run` would check it;
    ConfigError (naming the file) on bad input, and then nothing is written."""
    from peftbench.config import ConfigError
    from peftbench.tasks.base import load_rows
    from peftbench.tasks.declared import DeclaredTask
    from peftbench.tasks.task_file import TASK_FILE_SUFFIXES

    if task_file.suffix.lower() not in TASK_FILE_SUFFIXES:
        raise ConfigError(f"task file {task_file}: the name must end in {' or '.join(TASK_FILE_SUFFIXES)}")
    if task_file.exists() and not force:
        raise ConfigError(f"{task_file} exists; --force replaces it")
    if not data.is_file():
        raise ConfigError(f"--data: file not found: {data}")
    table = load_rows(str(data), key="--data") if data.stat().st_size else []
    rows = table[:GUESS_ROWS]
    if not rows:
        raise ConfigError(f"--data: {data} has no rows")
    task_file.parent.mkdir(parents=True, exist_ok=True)
    staging = task_file.with_name(f".{task_file.name}.tmp")
    staging.write_text(starter_text(data, task_file, rows, model), encoding="utf-8")
    try:
        task = DeclaredTask(staging)
        # forgetting_size 0: the default forgetting set of a hub model need not be downloaded to check this
        task.check_inputs(task.build_config(overrides={"forgetting_size": 0}))
    except ConfigError:
        staging.unlink()
        raise
    staging.replace(task_file)
