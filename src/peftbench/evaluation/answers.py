"""Answer extraction and comparison for math word problems (GSM8K / MetaMathQA formats).

Compatible with the PEFT suite's parser: the answer follows the last "The answer is" / "#### " delimiter;
numbers (including fractions) compare numerically, anything else as text.
"""

from __future__ import annotations

from decimal import Decimal, DivisionByZero, InvalidOperation
from typing import Optional, Union

ANSWER_DELIMITERS = (
    # MetaMathQA
    "The answer is: ",
    "The answer is ",
    "The final answer is: ",
    "The final answer is ",
    # GSM8K
    "#### ",
)


def extract_answer(text: str) -> Optional[str]:
    """The final answer in `text`, or None when no delimiter occurs."""
    text = text.strip().rstrip(".!?")
    for delimiter in ANSWER_DELIMITERS:
        if delimiter in text:
            break
    else:
        return None
    answer = text.rpartition(delimiter)[-1].strip()
    answer = answer.split("\n", 1)[0]  # a new paragraph after the answer is not part of it
    # GSM8K omits units and percent signs (50% -> 50), so drop them; thousands separators too
    return answer.strip(" .!?$%").replace(",", "")


def to_number(text: Optional[str]) -> Optional[float]:
    """A number ("13", "65.33", "20/14") as float, else None."""
    if text is None:
        return None
    try:
        text = text.strip()
        if "/" in text:
            numerator, _, denominator = text.partition("/")
            if "/" in denominator or Decimal(denominator.strip()) == 0:
                return None
            return float(Decimal(numerator.strip()) / Decimal(denominator.strip()))
        return float(Decimal(text))
    except (DivisionByZero, InvalidOperation, ValueError):
        return None


def normalized_answer(text: str) -> Union[float, str, None]:
    answer = extract_answer(text)
    number = to_number(answer)
    return number if number is not None else answer


def is_correct(prediction: str, reference: str) -> bool:
    """Whether the generated `prediction` has the same final answer as the `reference` solution."""
    expected = normalized_answer(reference)
    if expected is None:
        raise ValueError(f"reference solution has no final answer ('#### N' or 'The answer is: N'): {reference!r}")
    got = normalized_answer(prediction)
    return got is not None and got == expected
