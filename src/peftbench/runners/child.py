"""Child-process entry point: `python -m peftbench.runners.child REQUEST.json`.

The request is a JSON file (runners.execute.RunRequest fields); nothing is unpickled. The child writes the
result file itself and exits 0 once it is written, whatever the run's status; any other exit means it died
before writing, and the parent records `failed` with the child's stderr tail.
"""

from __future__ import annotations

import json
import signal
import sys


def _interrupt_once(signum, frame) -> None:
    # The first Ctrl-C cancels the run; later ones are ignored so that the `cancelled` result gets written.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m peftbench.runners.child REQUEST.json", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, _interrupt_once)
    from peftbench.config import ConfigError
    from peftbench.runners.execute import RunRequest, execute

    with open(argv[0], encoding="utf-8") as handle:
        request = RunRequest(**json.load(handle))
    try:
        path, status = execute(request)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    print(json.dumps({"result": str(path), "status": status}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
