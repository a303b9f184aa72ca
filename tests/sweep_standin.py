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
from peftbench.runners.request import RunRequest

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
rng = random.Random(f"{seed}-{lr}")
items = [1 if rng.random() < score(settings["best_test_lr"]) else 0 for _ in range(settings.get("items", 60))]
own = {
    "schema_version": 1, "task": trial["task"], "method": os.path.basename(os.path.dirname(trial["experiment_dir"])),
    "name": os.path.basename(trial["experiment_dir"]), "seed": seed, "status": status, "error_msg": error,
    "score_name": "accuracy", "higher_is_better": True, "num_threads": trial.get("num_threads"),
}
if status == "success":
    own.update(test_score=sum(items) / len(items), valid_score=round(score(settings["best_valid_lr"]), 6),
               per_item_correct=items)
own.update(trial.get("extra_result_fields") or {})
result = {
    "run_info": {"experiment_name": own["method"] + "/" + own["name"], "error_msg": error,
                 "train_config": {"optimizer_kwargs": {"lr": lr}, "seed": seed}, "peft_config": None},
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
                    peak: float = 0.8, fail: bool = False, fail_above_lr: float | None = None) -> Path:
    folder = root / method / name
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    (folder / "standin.json").write_text(json.dumps({
        "best_valid_lr": best_valid_lr, "best_test_lr": best_test_lr, "peak": peak, "fail": fail,
        "fail_above_lr": fail_above_lr,
    }))
    return folder


def standin_execute(request: RunRequest) -> TrialOutcome:
    trial = {**request.to_dict(), "result_name": request.result_stem, "extra_result_fields": request.result_fields()}
    completed = subprocess.run([sys.executable, "-c", CHILD_SCRIPT, json.dumps(trial)], capture_output=True, text=True)
    path = request.result_file()
    if completed.returncode != 0:
        return TrialOutcome(request.trial_id, "failed", None, completed.stderr.strip().splitlines()[-1])
    status = json.loads(path.read_text())["peftbench"]["status"]
    return TrialOutcome(request.trial_id, status, str(path))
