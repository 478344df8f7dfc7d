"""Training data: loaders and writers, splits, and a door to the synthetic generator.

A :class:`Record` (trainer.records) is one complaint text with its gold answer.
Every non-null gold value must occur verbatim in the text: the model is trained
to copy, never to rewrite. Files come in three formats, detected per row:

- ``seed``: ``{"system", "instruction", "input", "output"}`` (the tutorial's format);
  ``output`` is the answer as a JSON string (a ```json fence is allowed) or an object;
- ``chat``: ``{"messages": [system, user, assistant]}``;
- ``gold``: ``{"text", "gold", "tags"?}``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from core.errors import DataError
from core.prompting import SYSTEM_PROMPT
from core.schema import FIELDS, answer_json
from core.validation import normalize
from trainer.records import Gold as Gold
from trainer.records import Record as Record
from trainer.records import gold_problems as gold_problems
from trainer.records import record_problems as record_problems

Split = Literal["train", "val", "test"]
FORMATS: tuple[str, ...] = ("seed", "chat", "gold")
SPLITS: tuple[Split, ...] = ("train", "val", "test")

_SEED_KEYS = {"system", "instruction", "input", "output", "history", "id"}
_CHAT_KEYS = {"messages", "id"}
_GOLD_KEYS = {"text", "gold", "tags", "id"}
_FENCE = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.S)


def record_to_seed(r: Record) -> dict[str, str]:
    """The seed-format row of a record; ``output`` is the canonical answer JSON."""
    answer = answer_json(r.gold)
    return {"system": SYSTEM_PROMPT, "instruction": "", "input": r.text, "output": answer}


def record_to_chat(r: Record) -> dict[str, Any]:
    """The chat-format row of a record: system prompt, the text, the answer JSON."""
    turns = (("system", SYSTEM_PROMPT), ("user", r.text), ("assistant", answer_json(r.gold)))
    return {"messages": [{"role": role, "content": content} for role, content in turns]}


def record_to_gold(r: Record) -> dict[str, Any]:
    """The gold-format row of a record (the only format that keeps tags)."""
    return {"text": r.text, "gold": dict(r.gold), "tags": list(r.tags)}


def _raise_if(problems: list[str], where: str) -> None:
    if problems:
        rows = len({p.split(":", 1)[0] for p in problems})
        listing = "\n".join(f"  {p}" for p in problems)
        raise DataError(f"{where}: {rows} bad row(s):\n{listing}")


# --- loading ------------------------------------------------------------------


def _answer(value: Any) -> tuple[Any, list[str]]:
    """Parse an answer given as an object or a JSON string, possibly fenced."""
    if isinstance(value, dict):
        return value, []
    if not isinstance(value, str):
        return None, [f"output must be a JSON string or object, got {type(value).__name__}"]
    match = _FENCE.search(value)
    try:
        return json.loads(match.group(1) if match else value), []
    except json.JSONDecodeError as err:
        return None, [f"output is not valid JSON ({err.msg} at char {err.pos})"]


def _key_problems(row: dict[str, Any], required: Iterable[str], allowed: set[str]) -> list[str]:
    missing = [f"missing field {k!r}" for k in required if k not in row]
    unknown = sorted(str(k) for k in set(row) - allowed)
    return missing + ([f"unknown keys {unknown}"] if unknown else [])


def _from_seed(row: dict[str, Any]) -> tuple[Any, Any, list[str]]:
    problems = _key_problems(row, ("input", "output"), _SEED_KEYS)
    gold, more = _answer(row["output"]) if "output" in row else (None, [])
    return row.get("input"), gold, problems + more


def _from_chat(row: dict[str, Any]) -> tuple[Any, Any, list[str]]:
    problems = _key_problems(row, ("messages",), _CHAT_KEYS)
    messages = row.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        return None, None, problems + ["messages must be a list of objects"]
    by_role: dict[str, list[Any]] = {}
    for m in messages:
        by_role.setdefault(str(m.get("role")), []).append(m.get("content"))
    for role in ("user", "assistant"):
        if len(by_role.get(role, [])) != 1:
            problems.append(f"messages need exactly one {role!r} message")
    if problems:
        return None, None, problems
    gold, more = _answer(by_role["assistant"][0])
    return by_role["user"][0], gold, more


def _from_gold(row: dict[str, Any]) -> tuple[Any, Any, list[str]]:
    problems = _key_problems(row, ("text", "gold"), _GOLD_KEYS)
    tags = row.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        problems.append("tags must be a list of strings")
    return row.get("text"), row.get("gold"), problems


def parse_row(row: Any) -> tuple[Record | None, list[str]]:
    """A record from one row of any format, or ``None`` and every problem found."""
    if not isinstance(row, dict):
        return None, [f"row must be a JSON object, got {type(row).__name__}"]
    if "messages" in row:
        text, gold, problems = _from_chat(row)
    elif "text" in row or "gold" in row:
        text, gold, problems = _from_gold(row)
    elif {"input", "output", "instruction"} & set(row):
        text, gold, problems = _from_seed(row)
    else:
        return None, [f"unknown format (keys {sorted(map(str, row))})"]
    if text is not None and gold is not None:
        problems += gold_problems(text, gold)
    if problems:
        return None, problems
    return Record(text=text, gold=gold, tags=list(row.get("tags", []))), []


@dataclass(frozen=True)
class SizeLimits:
    """Most bytes one row and the whole data set may have (``None``: no limit).

    The queue task passes ``Settings.train_max_row_bytes`` and
    ``train_max_total_bytes``; a local run reads files of any size.
    """

    row_bytes: int | None = None
    total_bytes: int | None = None

    def check_row(self, number: int, size: int) -> None:
        """Raise :class:`DataTooLarge` when row ``number`` of ``size`` bytes is over the limit."""
        if self.row_bytes is not None and size > self.row_bytes:
            raise DataTooLarge(f"row {number} is larger than train_max_row_bytes "
                               f"({size} > {self.row_bytes} bytes)")

    def check_total(self, size: int, what: str = "data") -> None:
        if self.total_bytes is not None and size > self.total_bytes:
            raise DataTooLarge(f"{what} is larger than train_max_total_bytes "
                               f"({size} > {self.total_bytes} bytes)")


NO_LIMITS = SizeLimits()


class DataTooLarge(DataError):
    """A row or a data set over its size limit; the message names the row and the limit."""

    code = "data_too_large"


def _read_bytes(path: Path, limits: SizeLimits) -> bytes:
    """The file's bytes; with a total limit, its size is checked first and reading stops
    one byte past the limit (a file that grows, or lies about its size, is still bounded)."""
    try:
        with open(path, "rb") as fh:
            if limits.total_bytes is None:
                return fh.read()
            limits.check_total(os.fstat(fh.fileno()).st_size, str(path))
            raw = fh.read(limits.total_bytes + 1)
    except OSError as err:
        raise DataError(f"{path}: cannot read ({type(err).__name__}: {err.strerror})") from err
    limits.check_total(len(raw), str(path))
    return raw


def _read_rows(path: Path, limits: SizeLimits = NO_LIMITS) -> list[tuple[int, Any, str | None]]:
    """``(row number, value, JSON error)`` from a JSON array, one JSON object or JSONL.

    JSONL rows are numbered by line; blank lines are skipped. A row over
    ``limits.row_bytes`` raises :class:`DataTooLarge` before it is parsed.
    """
    try:
        raw = _read_bytes(path, limits).decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: cannot read (not UTF-8 at byte {err.start})") from err
    try:
        whole = json.loads(raw)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, (list, dict)):
        rows = whole if isinstance(whole, list) else [whole]
        for number, row in enumerate(rows, start=1):
            limits.check_row(number, row_bytes(row))
        return [(number, row, None) for number, row in enumerate(rows, start=1)]
    found: list[tuple[int, Any, str | None]] = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if line.strip():
            limits.check_row(number, len(line.encode("utf-8")))
            try:
                found.append((number, json.loads(line), None))
            except json.JSONDecodeError as err:
                found.append((number, None, f"invalid JSON ({err.msg} at char {err.pos})"))
    return found


def row_bytes(row: Any) -> int:
    """Size of a row as compact UTF-8 JSON, the measure of the size limits."""
    return len(json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def load_records(path: str | Path, limits: SizeLimits = NO_LIMITS) -> list[Record]:
    """Load every row of a seed, chat or gold file (JSON array or JSONL).

    Raises :class:`DataError` listing every bad row (``row N: reason``) if any row
    is bad, or when the file has no rows at all; :class:`DataTooLarge` when the
    file or a row is over ``limits``.
    """
    path = Path(path)
    rows = _read_rows(path, limits)
    if not rows:
        raise DataError(f"{path}: no rows")
    records, problems = [], []
    for number, row, json_error in rows:
        record, found = (None, [json_error]) if json_error else parse_row(row)
        problems += [f"row {number}: {p}" for p in found]
        if record is not None:
            records.append(record)
    _raise_if(problems, str(path))
    return records


def save_records(records: Sequence[Record], path: str | Path, fmt: str = "seed") -> Path:
    """Write records as ``fmt`` rows: a JSON array for ``*.json``, JSONL otherwise.

    Every record is validated first; with any bad record a :class:`DataError` lists
    them all and nothing is written. The file is written to a temporary name in
    the same folder and renamed, so a reader never sees a partial file.
    """
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; expected one of {list(FORMATS)}")
    path = Path(path)
    problems = [f"row {i}: {p}" for i, r in enumerate(records, 1) for p in record_problems(r)]
    _raise_if(problems, str(path))
    convert = {"seed": record_to_seed, "chat": record_to_chat, "gold": record_to_gold}[fmt]
    rows = [convert(r) for r in records]
    if path.suffix == ".json":
        body = json.dumps(rows, ensure_ascii=False, indent=1) + "\n"
    else:
        body = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    _write_atomic(path, body)
    return path


def _write_atomic(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(body)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- splits and hashes --------------------------------------------------------


def split_of(text: str, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> Split:
    """The split of a text, from the sha256 of its normalised form.

    The same text (up to width and whitespace) always lands in the same split,
    whatever else is in the data set, so duplicates never leak across splits.
    """
    if len(ratios) != 3 or min(ratios) < 0 or abs(sum(ratios) - 1.0) > 1e-9:
        raise DataError(f"split ratios {ratios} must be three non-negative numbers summing to 1")
    digest = hashlib.sha256(normalize(text).encode("utf-8")).digest()
    x = int.from_bytes(digest[:8], "big") / 2**64
    if x < ratios[0]:
        return "train"
    return "val" if x < ratios[0] + ratios[1] else "test"


def split_records(
    records: Iterable[Record], ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> dict[str, list[Record]]:
    """Records grouped by :func:`split_of`; all three keys are always present, order kept."""
    out: dict[str, list[Record]] = {s: [] for s in SPLITS}
    for r in records:
        out[split_of(r.text, ratios)].append(r)
    return out


def data_hash(records: Iterable[Record]) -> str:
    """sha256 of the records' texts and golds as canonical JSON, in order.

    Tags are left out, so converting between formats keeps the hash.
    """
    canon = [{"text": r.text, "gold": {k: r.gold.get(k) for k in FIELDS}} for r in records]
    blob = json.dumps(canon, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def hard_eval_path() -> Path:
    """Path of the hand-written hard evaluation set shipped with the package."""
    return Path(__file__).resolve().parent / "evalsets" / "hard_v1.jsonl"


def load_hard_eval() -> list[Record]:
    """The hard evaluation set (gold format, with tags)."""
    return load_records(hard_eval_path())


def synth_records(n: int, seed: int, plain: bool = False, extended: bool = False,
                  rare_names: bool = False, unlabelled: float | None = None) -> list[Record]:
    """``n`` synthetic records, identical for the same arguments (see trainer.synth).

    The generator is imported here, not at the top: it builds records, so it sits
    above this module."""
    from trainer.synth import synth_records as _synth

    return _synth(n, seed, plain, extended, rare_names, unlabelled)
