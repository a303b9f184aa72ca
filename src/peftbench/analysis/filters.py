"""Filter expressions such as `peft_type in ['LORA', 'OFT'] and test_score > 0.4`.

The expression is parsed with `ast` in 'eval' mode and evaluated by walking a whitelist of node types;
it is never compiled or executed. Allowed: `and`/`or`/`not`, comparisons (== != < <= > >= in, not in),
names (metrics and fields such as method, name, peft_type, task), numbers, strings, True/False/None,
lists and tuples of those, and unary minus.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

MAX_EXPRESSION_LENGTH = 1000

_COMPARISONS: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}


class FilterError(ValueError):
    """The filter expression is not valid; the message says where and what is allowed."""


@dataclass(frozen=True)
class Filter:
    text: str
    tree: ast.Expression
    names: frozenset[str]

    def matches(self, fields: Mapping[str, Any]) -> bool:
        """Whether a point with these fields passes. A comparison with a missing (None) value is False."""
        return bool(_evaluate(self.tree.body, fields))


def _describe(node: ast.AST) -> str:
    return f"{type(node).__name__} at column {getattr(node, 'col_offset', 0) + 1}"


def _check(node: ast.AST, names: set[str]) -> None:
    if isinstance(node, ast.BoolOp):
        for value in node.values:
            _check(value, names)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
        if isinstance(node.op, ast.USub) and not (
            isinstance(node.operand, ast.Constant) and type(node.operand.value) in (int, float)
        ):
            raise FilterError(f"unary minus is allowed only before a number ({_describe(node)})")
        _check(node.operand, names)
    elif isinstance(node, ast.Compare):
        for op in node.ops:
            if type(op) not in _COMPARISONS:
                raise FilterError(f"comparison {type(op).__name__} is not allowed; use == != < <= > >= in, not in")
        for operand in [node.left, *node.comparators]:
            _check(operand, names)
    elif isinstance(node, ast.Name):
        names.add(node.id)
    elif isinstance(node, ast.Constant):
        if not (node.value is None or type(node.value) in (bool, int, float, str)):
            raise FilterError(f"constant {node.value!r} is not allowed; use numbers, strings, True, False, None")
    elif isinstance(node, (ast.List, ast.Tuple)):
        for element in node.elts:
            if not isinstance(element, (ast.Constant, ast.UnaryOp)):
                raise FilterError(f"lists may hold only numbers and strings ({_describe(element)})")
            _check(element, names)
    else:
        raise FilterError(
            f"{_describe(node)} is not allowed in a filter; use names, numbers, strings, lists, "
            "comparisons (== != < <= > >= in, not in), and, or, not"
        )


def parse_filter(text: str, known_names: set[str] | None = None) -> Filter:
    """Parse and validate a filter expression. `known_names`, when given, rejects unknown names."""
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise FilterError(f"filter is longer than {MAX_EXPRESSION_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as error:
        raise FilterError(f"filter {text!r} is not a valid expression: {error.msg} at column {error.offset}") from None
    except (ValueError, RecursionError, MemoryError) as error:
        raise FilterError(f"filter {text!r} cannot be parsed: {error}") from None
    names: set[str] = set()
    try:
        _check(tree.body, names)
    except RecursionError:
        raise FilterError("filter is nested too deeply") from None
    if known_names is not None:
        unknown = sorted(names - known_names)
        if unknown:
            raise FilterError(f"unknown name(s) in filter: {', '.join(unknown)}; valid: {', '.join(sorted(known_names))}")
    return Filter(text, tree, frozenset(names))


def _evaluate(node: ast.AST, fields: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.BoolOp):
        values = (_evaluate(v, fields) for v in node.values)
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.UnaryOp):
        operand = _evaluate(node.operand, fields)
        return (not operand) if isinstance(node.op, ast.Not) else -operand
    if isinstance(node, ast.Compare):
        left = _evaluate(node.left, fields)
        for op, right_node in zip(node.ops, node.comparators):
            right = _evaluate(right_node, fields)
            if (left is None or right is None) and not isinstance(op, (ast.Eq, ast.NotEq)):
                return False
            try:
                if not _COMPARISONS[type(op)](left, right):
                    return False
            except TypeError:  # e.g. a string compared with a number: not a match, not a crash
                return False
            left = right
        return True
    if isinstance(node, ast.Name):
        return fields.get(node.id)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_evaluate(e, fields) for e in node.elts]
    raise FilterError(f"{_describe(node)} is not allowed")  # unreachable after _check
