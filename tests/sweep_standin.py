"""A stand-in for the training engine, so sweep and runner tests take milliseconds per trial.

`standin_execute(request)` runs one RunRequest the way the engine does: in a child Python process that writes
an ordinary result file atomically. The scores are a known function of the learning rate, with the
best validation rate and the best test rate set apart per experiment (in `standin.json` beside the
experiment's adapter config), so a test can tell whether selection looked at validation or test.
A helper module (not a test module: pytest collects test_*.py only).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from peftbench.runners.batch import TrialOutcome
from peftbench.run.request import RunRequest

# The child: scores peak at the experiment's best rates (0.1 lower per decade away), per-item results
# come from a seeded generator so that test_score == mean(per_item_correct) exactly.
CHILD_SCRIPT = r"""
import json, math, os, random, sys
trial = json.loads(sys.argv[1])
settings = json.load(open(os.path.join(trial["experiment_dir"], "standin.json")))
lr = trial["overrides"]["optimizer_kwargs"]["lr"]
seed = trial["seed"]
path = os.path.join(trial["results_dir"], trial["result_name"] + ".json")
def score(best):
    return max(0.0, settings["peak"] - 0.1 * abs(math.log10(lr) - math.log10(best)))
status, error = "success", ""
if settings.get("fail_above_lr") is not None and lr > settings["fail_above_lr"]:
    status, error = "diverged", "loss is nan"
if settings.get("fail"):
    status, error = "failed", "RuntimeError: forced failure"
# validation every eval_steps: the final score times the share of steps done (so every rung ranks the rates as
# the end does); a halving sweep's trial asks its rule at each one (peftbench.training.pruning), as the loop does
max_steps, eval_steps = settings["max_steps"], settings["eval_steps"]
halving = (trial.get("sweep") or {}).get("halving")
if halving:
    from peftbench.training.pruning import rung_check
    stop = rung_check(halving, max_steps)
steps, valid_score, valid_curve = max_steps, round(score(settings["best_valid_lr"]), 6), []
# the validation loss every valid_loss_steps (a halving sweep's loss signal) is 1 minus that score
loss_every = trial["overrides"].get("valid_loss_steps") or 0
if status == "success":
    for step in range(1, max_steps + 1):
        at_step = round(valid_score * step / max_steps, 6)
        if loss_every and step % loss_every == 0 and halving and stop(step, "loss", round(1 - at_step, 6)):
            status, error, steps, valid_score = "pruned", f"pruned at step {step}", step, None
            break
        if step % eval_steps:
            continue
        valid_curve.append({"step": step, "score": at_step})
        if halving and stop(step, "score", at_step):
            status, error, steps, valid_score = "pruned", f"pruned at step {step}", step, at_step
            break
rng = random.Random(f"{seed}-{lr}")
items = [1 if rng.random() < score(settings["best_test_lr"]) else 0 for _ in range(settings.get("items", 60))]
own = {
    "schema_version": 1, "task": trial["task"], "method": os.path.basename(os.path.dirname(trial["experiment_dir"])),
    "name": os.path.basename(trial["experiment_dir"]), "seed": seed, "status": status, "error_msg": error,
    "score_name": "accuracy", "higher_is_better": True, "num_threads": trial.get("num_threads"), "steps": steps,
    "valid_curve": valid_curve,
}
if status == "pruned":
    own.update(valid_score=valid_score)
if status == "success":
    own.update(test_score=sum(items) / len(items), valid_score=valid_score, per_item_correct=items)
own.update(trial.get("extra_result_fields") or {})
result = {
    "run_info": {"experiment_name": own["method"] + "/" + own["name"], "error_msg": error,
                 "train_config": {"optimizer_kwargs": {"lr": lr}, "seed": seed, "max_steps": max_steps},
                 "peft_config": None},
    "train_info": {"status": status, "metrics": []},
    "meta_info": {},
    "peftbench": own,
}
tmp = path + ".tmp-" + str(os.getpid())
with open(tmp, "w") as f:
    json.dump(result, f)
os.replace(tmp, path)
"""


def make_experiment(root: Path, method: str, name: str, *, best_valid_lr: float, best_test_lr: float,
                    peak: float = 0.8, fail: bool = False, fail_above_lr: float | None = None,
                    max_steps: int = 8, eval_steps: int = 2) -> Path:
    folder = root / method / name
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    (folder / "standin.json").write_text(json.dumps({
        "best_valid_lr": best_valid_lr, "best_test_lr": best_test_lr, "peak": peak, "fail": fail,
        "fail_above_lr": fail_above_lr, "max_steps": max_steps, "eval_steps": eval_steps,
    }))
    return folder


def standin_experiment(folder: Path, lr: float, seed: int = 0, max_steps: int = 8, eval_steps: int = 2):
    """The sweep's view of a stand-in experiment folder: its configured rate and seed, its steps."""
    from peftbench.sweep.plan import SweepExperiment

    return SweepExperiment(folder, folder.parent.name, folder.name, lr, seed, max_steps, eval_steps)


def two_methods(root: Path) -> list:
    """lora (its configured rate 1e-3 is the validation winner; test peaks at 1e-4) and ia3 (configured 1e-2; the
    rate above it, 3.16e-2, wins validation and test)."""
    lora = make_experiment(root, "lora", "r4", best_valid_lr=1e-3, best_test_lr=1e-4)
    ia3 = make_experiment(root, "ia3", "default", best_valid_lr=3.16e-2, best_test_lr=3.16e-2, peak=0.9)
    return [standin_experiment(lora, 1e-3), standin_experiment(ia3, 1e-2)]


def standin_execute(request: RunRequest) -> TrialOutcome:
    trial = {**request.to_dict(), "result_name": request.result_stem, "extra_result_fields": request.result_fields()}
    completed = subprocess.run([sys.executable, "-c", CHILD_SCRIPT, json.dumps(trial)], capture_output=True, text=True)
    path = request.result_file()
    if completed.returncode != 0:
        return TrialOutcome(request.result_stem, "failed", None, completed.stderr.strip().splitlines()[-1])
    status = json.loads(path.read_text())["peftbench"]["status"]
    return TrialOutcome(request.result_stem, status, str(path))
