"""Checks on what comes in (task payloads) and what comes out (model text).

Pure functions, no model and no broker, so they can be fuzzed.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from pydantic import ValidationError

from core.errors import InvalidInput, InvalidModelOutput
from core.schema import FIELDS, Complaint

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


def validate_payload(payload: Any, max_text_chars: int) -> tuple[str | None, str]:
    """Return ``(id, text)`` from a task payload, or raise :class:`InvalidInput`.

    Accepts ``{"text": str, "id": str|None, ...}``; extra keys from foreign
    clients are ignored. ``bytes`` text must be UTF-8.
    """
    if not isinstance(payload, dict):
        raise InvalidInput(f"payload must be an object, got {type(payload).__name__}")
    task_id = payload_id(payload)
    if "text" not in payload:
        raise InvalidInput("payload has no 'text' field", code="missing_text")
    text = payload["text"]
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as err:
            raise InvalidInput(
                f"text bytes are not UTF-8 (byte {err.start})", code="invalid_encoding"
            ) from err
    if not isinstance(text, str):
        raise InvalidInput(
            f"text must be a string, got {type(text).__name__}", code="invalid_text_type"
        )
    if not text.strip():
        raise InvalidInput("text is empty", code="empty_text")
    if len(text) > max_text_chars:
        raise InvalidInput(
            f"text has {len(text)} chars, max_text_chars is {max_text_chars}",
            code="text_too_long",
        )
    try:
        # A JSON escape like "\ud800" decodes to a lone surrogate, which no
        # tokenizer or UTF-8 encoder accepts.
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InvalidInput(
            f"text is not valid Unicode (lone surrogate at char {err.start})",
            code="invalid_encoding",
        ) from err
    return task_id, text


def payload_id(payload: Any) -> str | None:
    """The caller's ``id`` as a string of at most 200 chars that UTF-8 can encode."""
    if not isinstance(payload, dict) or payload.get("id") is None:
        return None
    raw = str(payload["id"])[:200]
    return raw.encode("utf-8", "replace").decode("utf-8")


def _first_object(raw: str) -> str:
    match = _FENCE.search(raw)
    body = match.group(1) if match else raw
    start = body.find("{")
    if start < 0:
        raise ValueError("no JSON object")
    obj, _ = json.JSONDecoder().raw_decode(body[start:])
    return json.dumps(obj, ensure_ascii=False)


def parse_complaint(raw: str) -> Complaint:
    """Parse model text (bare JSON or a ```json fence) into a :class:`Complaint`.

    Missing keys become ``None``; non-string values are rejected. Raises
    :class:`InvalidModelOutput` carrying only the raw text's length.
    """
    try:
        data = json.loads(_first_object(raw))
        if not isinstance(data, dict):
            raise ValueError("not an object")
        values = {k: data.get(k) for k in FIELDS}
        return Complaint.model_validate(values)
    except (ValueError, ValidationError, RecursionError) as err:
        raise InvalidModelOutput(
            f"model output is not a valid complaint ({type(err).__name__})",
            raw_len=len(raw),
        ) from err


def normalize(value: str) -> str:
    """Full/half-width folding (NFKC) and collapsed whitespace, for comparisons."""
    return " ".join(unicodedata.normalize("NFKC", value).split())


def same_field(pred: str | None, gold: str | None) -> bool:
    """Whether a predicted field counts as exact: equal after :func:`normalize` (width
    and whitespace); null equals only null. The one meaning of "field exact" for
    ``tiqu eval``, ``tiqu bench`` and the training run's ``eval.json``."""
    if pred is None or gold is None:
        return pred is None and gold is None
    return normalize(pred) == normalize(gold)


def grounding(result: Complaint, text: str) -> dict[str, bool]:
    """For each non-null field: does its value occur verbatim in ``text``?"""
    out = {}
    for key in FIELDS:
        value = getattr(result, key)
        if value is not None:
            out[key] = bool(value) and value in text
    return out


#: Longest task id accepted; Celery ids are 36-char UUIDs, callers may use their own.
MAX_TASK_ID_CHARS = 255


def usable_task_id(value: Any) -> str | None:
    """``value`` when it can address a result: a string of 1 to 255 chars UTF-8 can encode."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TASK_ID_CHARS:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a JSON escape cannot be a Redis key
        return None
    return value


def nesting_exceeds(value: Any, limit: int) -> bool:
    """Whether lists and objects in ``value`` nest more than ``limit`` deep.

    Iterative, so a value that the JSON decoder accepted, just short of the
    recursion limit, cannot raise ``RecursionError`` here.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False
