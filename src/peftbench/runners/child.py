"""Child-process entry point: `python -m peftbench.runners.child PLAN` (a JSON file, or `-` for stdin).

The plan is a run/plan.RunPlan as its parent made it (`to_dict`, plus the parent's pid); nothing is unpickled. A request
with `"job": "infer"` is an inference measurement instead (peftbench.inference.measure), with its own fields. The child
writes the result file itself and exits 0 once it is written, whatever the run's status; any other exit means
it died before writing, and the parent records the result. Ctrl-C, SIGTERM and SIGHUP cancel the run (a
`cancelled` result); so does the parent's death, which the kernel reports as SIGTERM (Linux).
"""

from __future__ import annotations

import json
import signal
import sys
import warnings

EXIT_BAD_INPUT = 3
EXIT_NOT_WRITTEN = 4
EXIT_CANCELLED = 5  # cancelled before the run began: nothing to record but that


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m peftbench.runners.child PLAN.json|-", file=sys.stderr)
        return 2
    from peftbench.cancel import cancel_on_signals, die_with_parent

    # Libraries' notices of their own coming API changes (transformers calling its deprecated names, ...) are
    # for peftbench's developers, who see them in the test suite, not for a user watching a run.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft|diffusers|torch)(\.|$)")

    if argv[0] == "-":
        fields = json.load(sys.stdin)
    else:
        with open(argv[0], encoding="utf-8") as handle:
            fields = json.load(handle)
    parent_pid = fields.pop("parent_pid", None)
    cancel_on_signals((signal.SIGINT, signal.SIGTERM, signal.SIGHUP), parent_pid=parent_pid)
    if parent_pid is not None:
        die_with_parent(parent_pid)
    if fields.get("job") == "infer":
        from peftbench.inference.measure import measure_job

        return measure_job(fields)
    from peftbench.config import ConfigError
    from peftbench.results.writer import ResultWriteError
    from peftbench.run.engine import run_planned

    try:
        path, status = run_planned(fields)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ResultWriteError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_NOT_WRITTEN
    except KeyboardInterrupt as interrupt:
        print(f"{interrupt}", file=sys.stderr)
        return EXIT_CANCELLED
    print(json.dumps({"result": str(path), "status": status}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
