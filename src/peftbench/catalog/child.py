"""The probe's child process: probes the peft types named on stdin (a JSON list), one JSON line per event on
stdout, so that the parent (survey.py) sees which method was running when a crash took the process down."""

from __future__ import annotations

import json
import sys
import warnings


def _emit(event: dict) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def main() -> None:
    # peft warns about defaults and unusual targets while being probed; the findings say what matters
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    import torch

    # the probe's models are tiny, and several children share the cores: threads would only compete
    torch.set_num_threads(1)
    from peftbench.catalog.probe import first_line, probe_method

    for peft_type in json.loads(sys.stdin.read()):
        _emit({"started": peft_type})
        try:
            _emit({"finished": probe_method(peft_type)})
        except Exception as error:  # noqa: BLE001 - one method's failure must not stop the others
            _emit({"failed": peft_type, "error": first_line(error)})


if __name__ == "__main__":
    main()
