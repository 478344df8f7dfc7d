"""The record type of training data and its validation; imports nothing above core.

A :class:`Record` is one complaint text with its gold answer. Every non-null gold
value must occur verbatim in the text: the model is trained to copy, never to
rewrite. The loaders (trainer.data) and the generator (trainer.synth) both build
records and check them with :func:`record_problems`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.errors import DataError
from core.schema import FIELDS

Gold = dict[str, str | None]


@dataclass
class Record:
    """One complaint text, its gold answer (keys exactly ``FIELDS``, in order) and tags."""

    text: str
    gold: Gold
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.gold) - set(FIELDS))
        if unknown:
            raise DataError(f"gold has unknown keys {unknown}; expected {list(FIELDS)}")
        self.gold = {k: self.gold.get(k) for k in FIELDS}


# --- validation ---------------------------------------------------------------


def gold_problems(text: Any, gold: Any) -> list[str]:
    """Every reason why ``gold`` is not a valid, grounded answer for ``text``."""
    if not isinstance(text, str):
        return [f"text must be a string, got {type(text).__name__}"]
    if not text.strip():
        return ["text is empty"]
    if not isinstance(gold, dict):
        return [f"answer must be a JSON object, got {type(gold).__name__}"]
    problems = []
    unknown = sorted(str(k) for k in set(gold) - set(FIELDS))
    if unknown:
        problems.append(f"unknown keys {unknown} in answer; expected {list(FIELDS)}")
    for key in FIELDS:
        value = gold.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            problems.append(f"gold {key!r} must be a string or null, got {type(value).__name__}")
        elif not value.strip():
            problems.append(f"gold {key!r} is an empty string (use null)")
        elif value not in text:
            problems.append(f"gold {key!r} value {value[:40]!r} not found in text")
    return problems


def record_problems(r: Record) -> list[str]:
    """Problems of a built record (same checks as the loaders, plus tag types)."""
    problems = gold_problems(r.text, r.gold)
    if not all(isinstance(t, str) for t in r.tags):
        problems.append("tags must be strings")
    return problems


# --- tokenised examples ---------------------------------------------------------

#: Label value that the loss ignores (PyTorch's cross-entropy default).
IGNORE = -100


@dataclass
class Example:
    """One tokenised training row; ``labels`` has the length of ``input_ids``."""

    input_ids: list[int]
    labels: list[int]

    @property
    def prompt_len(self) -> int:
        """Number of leading tokens the loss ignores."""
        return next((i for i, x in enumerate(self.labels) if x != IGNORE), len(self.labels))


@dataclass
class Encoded:
    """A tokenised data set: the kept examples and how many rows were dropped."""

    examples: list[Example] = field(default_factory=list)
    dropped: int = 0
    longest: int = 0

    @property
    def tokens(self) -> int:
        return sum(len(e.input_ids) for e in self.examples)
