"""Readers for complaint files: JSONL (id, text), CSV (a text column) or plain lines."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

TEXT_KEYS = ("text", "input", "complaint")


def _row_text(row: dict[str, Any]) -> Any:
    for key in TEXT_KEYS:
        if key in row:
            return row[key]
    return None


def read_jsonl(stream: TextIO) -> Iterator[tuple[str, Any]]:
    """Yield ``(id, text)`` per JSON line; a missing id becomes the line number.

    A line that is not JSON is passed on as its own text rather than dropped, so
    the worker answers it (most likely with an error envelope).
    """
    for n, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            yield str(n), line.rstrip("\n")
            continue
        if isinstance(row, dict):
            yield str(row.get("id", n)), _row_text(row)
        else:
            yield str(n), row


def read_csv(stream: TextIO) -> Iterator[tuple[str, Any]]:
    """Yield ``(id, text)`` from a CSV with a ``text`` (or ``input``) column."""
    reader = csv.DictReader(stream)
    for n, row in enumerate(reader, 1):
        yield str(row.get("id") or n), _row_text(row)


def read_lines(stream: TextIO) -> Iterator[tuple[str, Any]]:
    """Yield ``(line number, line)`` for each non-empty line."""
    for n, line in enumerate(stream, 1):
        if line.strip():
            yield str(n), line.rstrip("\n")


def read_source(path: str) -> Iterator[tuple[str, Any]]:
    """Pick a reader by extension; ``-`` reads plain lines from stdin."""
    if path == "-":
        stream: TextIO = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8")
        yield from read_lines(stream)
        return
    suffix = Path(path).suffix.lower()
    reader = {".jsonl": read_jsonl, ".json": read_jsonl, ".csv": read_csv}.get(suffix, read_lines)
    with open(path, encoding="utf-8", newline="" if suffix == ".csv" else None) as stream:
        yield from reader(stream)
