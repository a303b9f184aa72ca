"""The command-line modules stay thin: each parses its options, calls the layer below and renders the result."""

from __future__ import annotations

import ast
from pathlib import Path

import peftbench.cli

CLI_DIR = Path(peftbench.cli.__file__).parent
MAX_BODY_LINES = 50


def function_bodies(path: Path):
    """(name, lines of the body) of every function in a module: from the first statement after the docstring to
    the end, so that option declarations (the signature) and the help text are not counted."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
                body = body[1:] or body
            yield node.name, node.end_lineno - body[0].lineno + 1


def test_no_cli_function_body_exceeds_fifty_lines():
    too_long = {f"{path.name}:{name}": lines for path in sorted(CLI_DIR.glob("*.py"))
                for name, lines in function_bodies(path) if lines > MAX_BODY_LINES}
    assert not too_long, too_long


def test_the_measure_counts_body_lines_only(tmp_path):
    module = tmp_path / "m.py"
    module.write_text('def f(\n    a=1,\n    b=2,\n):\n    """Doc."""\n    x = a\n    return x\n')
    assert dict(function_bodies(module)) == {"f": 2}


def test_help_paragraphs_are_wrapped_by_the_terminal_not_the_source():
    """Rich help keeps a text's line breaks: a paragraph wrapped at the source's width would break mid-sentence
    at any other width. Indented lines (examples) keep theirs."""
    from typer.testing import CliRunner

    for command in peftbench.cli.app.registered_commands:
        assert "\n" not in command.short_help, command.name
        for paragraph in command.help.split("\n\n"):
            lines = paragraph.splitlines()
            assert len(lines) == 1 or any(line.startswith(" ") for line in lines), (command.name, paragraph)
    listing = CliRunner().invoke(peftbench.cli.app, ["--help"], env={"COLUMNS": "200"}).output
    assert "(<method>/<name>/ with adapter_config.json or training_params.json) under ROOTS." in listing
