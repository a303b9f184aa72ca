"""Coverage table: every peft method on a tiny model, converted to LoRA at full rank and rank 8.

Side by side with peft's own `convert_to_lora` on the same adapters. Writes the table into
benchmarks/conversion.md (between the COVERAGE markers) and prints it.

    .venv/bin/python benchmarks/bench_conversion.py
"""

from __future__ import annotations

import datetime
import platform
import re
import sys
import time
import warnings
from pathlib import Path

SECTION_FILE = Path(__file__).with_name("conversion.md")


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


def coverage_table() -> str:
    import peft
    import torch
    from rich.progress import track

    from peftbench.conversion.coverage import METHOD_CASES, check_method

    warnings.filterwarnings("ignore")
    rows = []
    started = time.perf_counter()
    for case in track(METHOD_CASES, description="converting methods"):
        row = check_method(case, compare_with_peft=True)
        if row.converts == "refused":
            converts = "refused: " + row.reason.removeprefix("adapter config: ").split(". ")[0]
        else:
            converts = row.converts
        if row.peft_error_full_rank is None and row.converts != "refused":
            peft_note = row.peft_failure or "refused"
        elif row.peft_error_full_rank is not None and row.peft_error_full_rank > 1e-4:
            peft_note = "wrong result"
        else:
            peft_note = ""
        rows.append(
            "| {method} | {ptype} | {converts} | {source} | {effect} | {full} | {r8} | {pfull} | {p8} | {note} |".format(
                method=case.name,
                ptype=case.peft_type,
                converts=converts.replace("|", "/"),
                source=row.delta_source or "-",
                effect=_number(row.adapter_effect),
                full=_number(row.error_full_rank),
                r8=_number(row.error_rank8),
                pfull=_number(row.peft_error_full_rank),
                p8=_number(row.peft_error_rank8),
                note=peft_note.replace("|", "/"),
            )
        )
    elapsed = time.perf_counter() - started
    header = [
        f"Command: `.venv/bin/python benchmarks/bench_conversion.py` · machine: 2-core CPU "
        f"({platform.processor() or platform.machine()}), torch {torch.__version__}, peft {peft.__version__} · "
        f"date: {datetime.date.today().isoformat()} · {elapsed:.0f} s for {len(METHOD_CASES)} methods.",
        "",
        "Tiny random Llama (hidden 64, 2 layers), every adapter parameter perturbed with seeded noise. Errors are "
        "max over 4 probe sequences of ||logits_converted - logits_original|| / ||logits_original||; "
        "'adapter effect' is the same measure for the base model without the adapter (what there is to "
        "reproduce). 'ΔW read by': peft's own get_delta_weight where it declares one and a random probe confirms "
        "it, else the identity probe. peft columns: `peft.convert_to_lora` at rank 64 (full) and 8 on the same adapter.",
        "",
        "| method | peft_type | peftbench converts? | ΔW read by | adapter effect | peftbench full rank | peftbench rank 8 "
        "| peft full rank | peft rank 8 | peft's conversion |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    return "\n".join(header + rows)


def write_marked_section(marker: str, heading: str, table: str) -> None:
    """Replace the text between <!-- MARKER:START/END --> in conversion.md (or append it under `heading`)."""
    start, end = f"<!-- {marker}:START -->", f"<!-- {marker}:END -->"
    text = SECTION_FILE.read_text(encoding="utf-8") if SECTION_FILE.exists() else "# Conversion to LoRA\n"
    block = f"{start}\n{table}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + f"\n\n## {heading}\n\n{block}\n"
    temporary = SECTION_FILE.with_suffix(".md.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(SECTION_FILE)


def main() -> int:
    table = coverage_table()
    print(table)
    write_marked_section("COVERAGE", "Which methods convert (coverage)", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
