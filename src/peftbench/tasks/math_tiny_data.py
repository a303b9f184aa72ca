"""Procedural data for the offline `math-tiny` task: word problems, their step-by-step solutions,
the pretraining corpus of the shipped tiny model, and the held-out text used to measure forgetting.

Everything here is deterministic from a seed and uses only the standard library.

Disjointness. Every problem is a chain of numbers: a start value and 2-3 operations
(add, subtract, multiply) with their operands. The split a problem belongs to (train, valid or test) is
a hash of that chain alone, independent of names, items, sentence templates and distractors. So a test
problem's numbers never appear as a chain in any training problem or pretraining story, under any
phrasing: this is stricter than "the same template and numbers".

The pretraining corpus teaches the language of the problems without their question/answer format: a
half of its documents are "worked stories" (a narrative in the problems' own sentence templates,
followed by a recap that restates it step by step, without the answer format), the rest are arithmetic facts, counting,
comparisons and plain stories with quantities. It never contains "Question:", "Answer:" or "####", so the
base model cannot answer in the task's format before fine-tuning.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

SPLITS = ("train", "valid", "test")
# Share of the number-chain hash space given to each held-out split (the rest is train).
_TEST_BUCKETS = range(0, 100)  # 10 %
_VALID_BUCKETS = range(100, 150)  # 5 %
_HASH_BUCKETS = 1000

MAX_START = 60
MAX_OPERAND = 40
MAX_FACTOR = 5
MAX_RESULT = 999

NAMES = [
    "Ava", "Ben", "Cleo", "Dan", "Eli", "Finn", "Gia", "Hugo", "Ivy", "Jack", "Kai", "Lena", "Mia",
    "Noah", "Omar", "Pia", "Quinn", "Rosa", "Sam", "Tara", "Uma", "Vic", "Wes", "Yara", "Zoe",
]
ITEMS = [
    "apples", "books", "candies", "marbles", "stickers", "pencils", "cookies", "shells", "coins",
    "stamps", "cards", "balloons", "buttons", "eggs", "flowers", "toys", "beads", "rocks",
]
OTHER_THINGS = ["birds", "cars", "chairs", "trees", "clouds", "boats", "cats", "dogs"]

START_TEMPLATES = [
    "{name} has {n} {item}.",
    "{name} starts with {n} {item}.",
    "{name} owns {n} {item}.",
    "{name} collected {n} {item}.",
]
OPERATION_TEMPLATES = {
    "add": [
        "{name} buys {n} more {item}.",
        "Then {name} finds {n} more.",
        "A friend gives {name} {n} {item}.",
        "{name} gets {n} more {item} from the shop.",
    ],
    "sub": [
        "{name} gives away {n} {item}.",
        "Then {name} loses {n} of them.",
        "{name} sells {n} {item}.",
        "{name} uses {n} {item}.",
    ],
    "mul": [
        "{name} ends up with {n} times as many {item}.",
        "After a trade, {name} has {n} times as many {item} as before.",
        "Each of {name}'s {item} is swapped for {n} new ones.",
        "Then the number of {item} grows {n} times.",
    ],
}
SYMBOL = {"add": "+", "sub": "-", "mul": "*"}
DISTRACTOR_TEMPLATES = [
    "{other} has {n} {item}.",
    "{other} sees {n} {thing}.",
    "The shop is {n} meters away.",
    "It takes {n} minutes to walk home.",
]
QUESTION_TEMPLATES = [
    "How many {item} does {name} have now?",
    "How many {item} does {name} have at the end?",
    "What is the number of {item} {name} has now?",
]

NUMBER_WORDS = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
]


@dataclass(frozen=True)
class Problem:
    """One word problem: the number chain and how it is phrased."""

    name: str
    item: str
    start: int
    operations: tuple[tuple[str, int], ...]  # (kind, operand), kind in add/sub/mul
    start_template: int
    operation_templates: tuple[int, ...]
    distractor: str | None  # a rendered sentence that does not change the answer
    distractor_position: int  # index among the operation sentences where it is inserted
    question_template: int

    @property
    def number_chain(self) -> tuple:
        """What the split is decided on: start value and operations, nothing about phrasing."""
        return (self.start, self.operations)

    def intermediate_values(self) -> list[int]:
        values = [self.start]
        for kind, operand in self.operations:
            values.append(_apply(kind, values[-1], operand))
        return values

    @property
    def answer(self) -> int:
        return self.intermediate_values()[-1]

    def story_sentences(self) -> list[str]:
        """The narrative: start, operations, with the distractor inserted (no question)."""
        sentences = self.relevant_sentences()
        if self.distractor is not None:
            sentences.insert(1 + self.distractor_position, self.distractor)
        return sentences

    def question(self) -> str:
        ask = QUESTION_TEMPLATES[self.question_template].format(name=self.name, item=self.item)
        return " ".join(self.story_sentences() + [ask])

    def relevant_sentences(self) -> list[str]:
        """The start and operation sentences as the story tells them (the distractor left out)."""
        fill = {"name": self.name, "item": self.item}
        sentences = [START_TEMPLATES[self.start_template].format(n=self.start, **fill)]
        for (kind, operand), template in zip(self.operations, self.operation_templates):
            sentences.append(OPERATION_TEMPLATES[kind][template].format(n=operand, **fill))
        return sentences

    def solution(self) -> str:
        """Step-by-step solution ending in the `#### <answer>` line the math task scores: each relevant
        sentence of the story restated, then the step it implies. Restating keeps the model's place in the
        story (the next step is read from the sentence after the one just restated), which a 4-layer model
        can do; picking the k-th operand out of the question from a bare equation chain, it could not."""
        values = self.intermediate_values()
        sentences = self.relevant_sentences()
        steps = [sentences[0]]
        for sentence, (kind, operand), before, after in zip(sentences[1:], self.operations, values, values[1:]):
            steps.append(f"{sentence} {before} {SYMBOL[kind]} {operand} = {after}.")
        return " ".join(steps) + f"\n#### {values[-1]}"

    def as_row(self) -> dict[str, str]:
        """The `math` task's schema: a query and a response whose last line is `#### N`. The response starts
        with a space because the task appends it to the prompt as it is ("...Answer:" + response): without
        it, the first word would be a no-space token that the model only ever saw at the start of a text."""
        return {"query": self.question(), "response": " " + self.solution()}


def _apply(kind: str, value: int, operand: int) -> int:
    if kind == "add":
        return value + operand
    if kind == "sub":
        return value - operand
    return value * operand


def split_of(number_chain: tuple) -> str:
    """The split (train/valid/test) a number chain belongs to, fixed for all seeds."""
    digest = hashlib.sha256(repr(number_chain).encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") % _HASH_BUCKETS
    if bucket in _TEST_BUCKETS:
        return "test"
    if bucket in _VALID_BUCKETS:
        return "valid"
    return "train"


def _random_operations(rng: random.Random, start: int) -> tuple[tuple[str, int], ...]:
    """2-3 operations whose running value stays in 0..MAX_RESULT."""
    operations = []
    value = start
    for _ in range(rng.choice((2, 3))):
        choices = ["add", "sub", "mul"] if value * 2 <= MAX_RESULT else ["add", "sub"]
        if value <= 1:
            choices.remove("sub")
        kind = rng.choice(choices)
        if kind == "add":
            operand = rng.randint(1, min(MAX_OPERAND, MAX_RESULT - value))
        elif kind == "sub":
            operand = rng.randint(1, min(MAX_OPERAND, value - 1))
        else:
            operand = rng.randint(2, min(MAX_FACTOR, MAX_RESULT // value))
        operations.append((kind, operand))
        value = _apply(kind, value, operand)
    return tuple(operations)


def _random_distractor(rng: random.Random, name: str, item: str) -> str:
    other = rng.choice([n for n in NAMES if n != name])
    template = rng.choice(DISTRACTOR_TEMPLATES)
    return template.format(other=other, n=rng.randint(1, MAX_START), item=item, thing=rng.choice(OTHER_THINGS))


def random_problem(rng: random.Random) -> Problem:
    """Any problem, regardless of split; callers filter by `split_of(problem.number_chain)`."""
    name = rng.choice(NAMES)
    item = rng.choice(ITEMS)
    start = rng.randint(2, MAX_START)
    operations = _random_operations(rng, start)
    has_distractor = rng.random() < 0.5
    return Problem(
        name=name,
        item=item,
        start=start,
        operations=operations,
        start_template=rng.randrange(len(START_TEMPLATES)),
        operation_templates=tuple(rng.randrange(len(OPERATION_TEMPLATES[kind])) for kind, _ in operations),
        distractor=_random_distractor(rng, name, item) if has_distractor else None,
        distractor_position=rng.randint(0, len(operations)),
        question_template=rng.randrange(len(QUESTION_TEMPLATES)),
    )


def generate_problems(split: str, count: int, seed: int) -> list[Problem]:
    """`count` distinct problems of one split (distinct number chains), deterministic from `seed`."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    # The split name is part of the stream, so the same seed gives unrelated draws per split.
    rng = random.Random(f"math-tiny/{split}/{seed}")
    problems: list[Problem] = []
    seen_chains: set[tuple] = set()
    while len(problems) < count:
        problem = random_problem(rng)
        chain = problem.number_chain
        if chain in seen_chains or split_of(chain) != split:
            continue
        seen_chains.add(chain)
        problems.append(problem)
    return problems


def generate_rows(split: str, count: int, seed: int) -> list[dict[str, str]]:
    """Rows in the `math` task's schema ({"query", "response"}) for one split."""
    return [problem.as_row() for problem in generate_problems(split, count, seed)]


# --- pretraining corpus -------------------------------------------------------------------------------


def _worked_story(rng: random.Random) -> str:
    """A train-split problem told as a story, then recapped in a style unlike the task's solutions."""
    while True:
        problem = random_problem(rng)
        if split_of(problem.number_chain) == "train":
            break
    story = " ".join(problem.story_sentences())
    if rng.random() < 0.5:  # the question sentence too, so its words are known; the answer stays a recap
        story += " " + QUESTION_TEMPLATES[problem.question_template].format(name=problem.name, item=problem.item)
    values = problem.intermediate_values()
    pairs = list(zip(problem.operations, values, values[1:]))
    style = rng.random()
    if style < 0.4:  # walk through every sentence in order, the distractor too
        recap = []
        steps = iter(pairs)
        for sentence in problem.story_sentences():
            if sentence == problem.distractor:
                recap.append(f"{sentence} That does not change the {problem.item}.")
            elif not recap:
                recap.append(f"{sentence} That is {problem.start}.")
            else:
                (k, n), a, b = next(steps)
                recap.append(f"{sentence} So {a} {SYMBOL[k]} {n} = {b}.")
        recap_text = " ".join(recap) + f" In the end there are {values[-1]} {problem.item}."
    elif style < 0.8:  # the relevant sentences only, each with its step in brackets
        sentences = problem.relevant_sentences()
        recap = [sentences[0]] + [f"{s} ({a} {SYMBOL[k]} {n} = {b})" for s, ((k, n), a, b) in zip(sentences[1:], pairs)]
        recap_text = " ".join(recap) + f" So {problem.name} has {values[-1]} {problem.item}."
    else:
        recap = [f"At first there are {problem.start} {problem.item}."]
        recap += [f"Then there are {a} {SYMBOL[k]} {n} = {b} {problem.item}." for (k, n), a, b in pairs]
        recap.append(f"In the end there are {values[-1]} {problem.item}.")
        recap_text = " ".join(recap)
    return story + "\n" + recap_text


def _arithmetic_facts(rng: random.Random) -> str:
    facts = []
    for _ in range(rng.randint(4, 8)):
        kind = rng.choice(("add", "sub", "mul"))
        if kind == "mul":
            a, b = rng.randint(0, 199), rng.randint(2, MAX_FACTOR)
        else:
            a, b = rng.randint(0, MAX_RESULT - MAX_OPERAND), rng.randint(1, MAX_OPERAND)
            if kind == "sub" and b > a:
                a, b = b, a
        facts.append(f"{a} {SYMBOL[kind]} {b} = {_apply(kind, a, b)}.")
    return " ".join(facts)


def _counting(rng: random.Random) -> str:
    style = rng.randrange(3)
    if style == 0:
        start = rng.randint(0, 980)
        return "Count: " + ", ".join(str(start + i) for i in range(rng.randint(5, 12))) + "."
    if style == 1:
        numbers = rng.sample(range(len(NUMBER_WORDS)), 5)
        return " ".join(f"{NUMBER_WORDS[n].capitalize()} is {n}." for n in numbers)
    pairs = [(rng.randint(0, 999), rng.randint(0, 999)) for _ in range(rng.randint(3, 6))]
    return " ".join(
        f"{a} is {'more than' if a > b else 'less than' if a < b else 'equal to'} {b}." for a, b in pairs
    )


def _plain_story(rng: random.Random) -> str:
    name, other = rng.sample(NAMES, 2)
    item, thing = rng.choice(ITEMS), rng.choice(OTHER_THINGS)
    sentences = [
        f"{name} went to the park with {rng.randint(2, MAX_START)} {item}.",
        f"{other} saw {rng.randint(2, MAX_START)} {thing} there.",
        rng.choice(["The sun was warm.", "It started to rain.", "The wind was cold.", "Everyone was happy."]),
        f"{name} counted {rng.randint(2, MAX_START)} {thing} on the way home.",
        f"{other} had {rng.randint(2, MAX_START)} {item} in a bag.",
    ]
    rng.shuffle(sentences)
    return " ".join(sentences[: rng.randint(3, 5)])


WORKED_STORY_SHARE = 0.5


def pretraining_document(rng: random.Random, worked_share: float = WORKED_STORY_SHARE) -> str:
    """One document of the pretraining distribution: `worked_share` worked stories, the rest arithmetic
    facts (1/3), counting and comparisons (4/15) and plain stories (6/15)."""
    draw = rng.random()
    if draw < worked_share:
        return _worked_story(rng)
    rest = (draw - worked_share) / (1 - worked_share)
    if rest < 1 / 3:
        return _arithmetic_facts(rng)
    if rest < 0.6:
        return _counting(rng)
    return _plain_story(rng)


def pretraining_corpus(count: int, seed: int, worked_share: float = WORKED_STORY_SHARE) -> list[str]:
    """`count` pretraining documents, deterministic from `seed` (and from the mix, which names the stream)."""
    stream = f"math-tiny/pretrain/{seed}" if worked_share == WORKED_STORY_SHARE else f"math-tiny/pretrain/{seed}/worked{worked_share}"
    rng = random.Random(stream)
    return [pretraining_document(rng, worked_share) for _ in range(count)]


def forgetting_texts(count: int, seed: int) -> list[str]:
    """Held-out documents of the pretraining distribution (a stream the pretraining never drew from)."""
    rng = random.Random(f"math-tiny/forgetting/{seed}")
    return [pretraining_document(rng) for _ in range(count)]
