"""Warnings for scores that say more about the set-up than about the method.

A run whose completions never stop, or that scores 0 on a task whose training loss fell, looks complete in its
result file; these checks say so in the result (`run_warnings`) and `report` repeats them, with the likely
causes, instead of letting a quiet 0 stand on a frontier.
"""

from __future__ import annotations

from peftbench.results.record import RunResult

# Curve fraction averaged at each end when deciding whether the training loss fell.
CURVE_END_FRACTION = 0.1
STOP_CAUSES = (
    "likely causes: the model never learned to emit its stop token (a pad token trained in EOS's place: see "
    "the pad_token parameter), prompts that end in the tokenizer's EOS (a tokenizer that appends it), sampled "
    "decoding from the model's generation_config (decoding 'model') on a model too unsure to sample the answer, "
    "a chat template or stop string the training rows lack, or a max_new_tokens too small for the answers"
)


def run_warnings(result: RunResult, test_items: int) -> list[str]:
    """The warnings that a finished run's result should carry (none for a healthy run)."""
    warnings = []
    at_limit = result.completions_at_length_limit
    if at_limit is not None and test_items > 0 and at_limit == test_items:
        warnings.append(f"every test completion ({test_items}) ran to the length limit without a stop token; {STOP_CAUSES}")
    start, end = _curve_ends(result.train_curve)
    if result.test_score == 0 and result.higher_is_better and start is not None and end < start:
        warnings.append(
            f"test {result.score_name} is 0 although the training loss fell ({start:.3g} -> {end:.3g}): the "
            f"training did change the model, so check how its output is scored; {STOP_CAUSES}"
        )
    return warnings


def _curve_ends(curve: list[dict]) -> tuple[float | None, float | None]:
    """Mean training loss over the first and the last CURVE_END_FRACTION of the curve (None when too short)."""
    losses = [point["loss"] for point in curve if isinstance(point.get("loss"), (int, float))]
    if len(losses) < 2:
        return None, None
    width = max(1, int(len(losses) * CURVE_END_FRACTION))
    return sum(losses[:width]) / width, sum(losses[-width:]) / width
