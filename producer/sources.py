"""Readers for complaint files and writers for result files.

Inputs: JSONL (id, text), a JSON array (of strings or of {id, text} objects), CSV
with a text column (UTF-8 with or without a BOM, or GB18030/GBK as Chinese-locale
Excel saves it), XLSX (with the ``tiqu[xlsx]`` extra) or plain lines.
Outputs: JSONL (one envelope per line) or CSV with flattened fields.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from core.errors import TiquError
from core.schema import FIELDS

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


class SourceError(TiquError):
    """An input file that cannot be read as complaints, or an output that cannot be parsed."""

    code = "bad_source"


def decode_bytes(data: bytes, encoding: str | None = None) -> str:
    """Decode with ``encoding``, or UTF-8 (a BOM is dropped) falling back to GB18030.

    GB18030 is a superset of GBK/GB2312, the encodings Excel uses for CSV on a
    Chinese-locale Windows; a file that is neither fails with a clear error.
    """
    for enc in [encoding] if encoding else ["utf-8-sig", "gb18030"]:
        try:
            return data.decode(enc)
        except UnicodeDecodeError as err:
            last = err
        except LookupError as err:
            raise SourceError(f"unknown encoding {encoding!r}") from err
    raise SourceError(f"cannot decode input as {encoding or 'UTF-8 or GB18030'}; "
                      "pass --encoding") from last


def read_json(stream: TextIO) -> Iterator[tuple[str, Any]]:
    """A JSON array (of strings or {id, text} objects) or, otherwise, JSON lines."""
    text = stream.read()
    if not text.lstrip().startswith("["):
        yield from read_jsonl(io.StringIO(text))
        return
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as err:
        raise SourceError(f"not a JSON array: line {err.lineno}: {err.msg}") from err
    for n, row in enumerate(rows, 1):
        if isinstance(row, dict):
            yield str(row.get("id", n)), _row_text(row)
        else:
            yield str(n), row


def read_xlsx(path: str) -> Iterator[tuple[str, Any]]:
    """Rows of the first sheet; the first row names the columns (``text``, optional ``id``)."""
    try:
        import openpyxl  # optional: only XLSX input needs it
    except ImportError as err:
        raise SourceError("reading .xlsx needs openpyxl: pip install 'tiqu[xlsx]'") from err
    book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        rows = book.worksheets[0].iter_rows(values_only=True)
        header = [str(c).strip() if c is not None else "" for c in next(rows, ())]
        for n, values in enumerate(rows, 1):
            if all(v is None for v in values):
                continue
            row = dict(zip(header, values, strict=False))
            yield str(row.get("id") or n), _row_text(row)
    finally:
        book.close()


def read_source(path: str, encoding: str | None = None) -> Iterator[tuple[str, Any]]:
    """Pick a reader by extension; ``-`` reads plain lines from stdin.

    Text files are decoded with ``encoding`` or detected (see :func:`decode_bytes`).
    """
    suffix = "" if path == "-" else Path(path).suffix.lower()
    if suffix == ".xlsx":
        yield from read_xlsx(path)
        return
    data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    text = decode_bytes(data, encoding)
    readers = {".jsonl": read_jsonl, ".json": read_json, ".csv": read_csv}
    reader = readers.get(suffix, read_lines)
    stream = io.StringIO(text, newline="" if suffix == ".csv" else None)
    yield from reader(stream)


# --- outputs ----------------------------------------------------------------------------

CSV_COLUMNS: tuple[str, ...] = ("id", "status", "error_code", "review") + tuple(
    f"{f}{part}" for f in FIELDS for part in ("", "_start", "_end", "_confidence"))


def _csv_row(env: dict[str, Any]) -> list[Any]:
    result = env.get("result") or {}
    spans = env.get("spans") or {}
    conf = env.get("confidence") or {}
    row: list[Any] = [env.get("id"), env.get("status"), (env.get("error") or {}).get("code"),
                      ";".join(env.get("review") or [])]
    for f in FIELDS:
        span = spans.get(f) or [None, None]
        row += [result.get(f), span[0], span[1], conf.get(f)]
    return ["" if v is None else v for v in row]


def _csv_line(row: list[Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerow(row)
    return buf.getvalue()


class OutputFormat:
    """How envelopes become lines of a result file, and how a file is read back.

    ``render`` gives the text for one envelope; ``read_back`` gives, per written
    record, its text and whether it is final (anything but a ``timeout`` envelope,
    which a resumed run replaces). A torn last record is dropped.
    """

    def __init__(self, name: str) -> None:
        if name not in ("jsonl", "csv"):
            raise SourceError(f"output format {name!r} is not one of jsonl, csv")
        self.name = name
        #: CSV gets a BOM so that Excel opens Chinese text as UTF-8.
        self.encoding = "utf-8-sig" if name == "csv" else "utf-8"
        self.header = _csv_line(list(CSV_COLUMNS)) if name == "csv" else ""

    def render(self, env: dict[str, Any]) -> str:
        if self.name == "csv":
            return _csv_line(_csv_row(env))
        return json.dumps(env, ensure_ascii=False) + "\n"

    def read_back(self, path: str) -> list[tuple[str, bool]]:
        try:
            text = Path(path).read_text(encoding=self.encoding)
        except FileNotFoundError:
            return []
        if self.name == "csv":
            return self._read_csv(text)
        out = []
        # Split on "\n" only: U+2028 and friends may sit raw inside a JSON string.
        for line in text.split("\n")[:-1]:
            line += "\n"
            try:
                env = json.loads(line)
            except json.JSONDecodeError:
                break
            if not isinstance(env, dict):
                break
            out.append((line, (env.get("error") or {}).get("code") != "timeout"))
        return out

    def _read_csv(self, text: str) -> list[tuple[str, bool]]:
        if not text.endswith("\n"):  # a torn last row
            text = text[:text.rfind("\n") + 1]
        code = CSV_COLUMNS.index("error_code")
        out: list[tuple[str, bool]] = []
        try:
            reader = csv.reader(io.StringIO(text, newline=""))
            next(reader, None)  # the header
            for row in reader:
                if len(row) != len(CSV_COLUMNS):
                    break
                out.append((_csv_line(row), row[code] != "timeout"))
        except csv.Error:
            pass  # keep the rows before a torn one
        return out
