"""Filter expressions are parsed and walked, never executed."""

from __future__ import annotations

import pytest

from peftbench.analysis.filters import FilterError, parse_filter

FIELDS = {"peft_type": "LORA", "method": "lora", "test_score": 0.45, "peak_memory": 2e10, "name": "lora/r8", "forgetting": None}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("peft_type in ['LORA','OFT'] and test_score > 0.4", True),
        ("peft_type in ('OFT', 'IA3')", False),
        ("peft_type not in ['OFT']", True),
        ("not test_score > 0.4", False),
        ("test_score > 0.5 or method == 'lora'", True),
        ("0.4 < test_score <= 0.45", True),
        ("peak_memory < 20e9", False),
        ("'r8' in name", True),
        ("forgetting < 0.1", False),  # missing value: comparisons are False, never an error
        ("forgetting == None", True),
        ("test_score > -1", True),
        ("method > 3", False),  # mismatched types: not a match, not a crash
    ],
)
def test_filter_matches(expression, expected):
    assert parse_filter(expression).matches(FIELDS) is expected


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('echo pwned')",
        "open('/etc/passwd')",
        "method.upper() == 'LORA'",
        "(lambda: 1)()",
        "FIELDS['x']",
        "test_score + 1 > 2",
        "[x for x in name]",
        "-method",
        "test_score if True else 0",
        "f'{name}' == 'x'",
        "name := 1",
    ],
)
def test_anything_beyond_the_whitelist_is_rejected(expression):
    with pytest.raises(FilterError, match="not allowed|allowed only|not a valid expression"):
        parse_filter(expression)


def test_syntax_and_unknown_name_errors_say_what_is_valid():
    with pytest.raises(FilterError, match="not a valid expression"):
        parse_filter("test_score >")
    with pytest.raises(FilterError, match="unknown name.*tets_score.*valid: .*test_score"):
        parse_filter("tets_score > 0.4", {"test_score", "method"})


def test_deeply_nested_or_huge_expressions_are_refused_cleanly():
    with pytest.raises(FilterError):
        parse_filter("not " * 5000 + "True")
    with pytest.raises(FilterError, match="longer than"):
        parse_filter("test_score > 0 and " * 200 + "True")
