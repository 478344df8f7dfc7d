"""Corrections: an answer a person (or an upstream system) says is right for a text.

A correction is labelled training data kept on purpose: each one is appended to
the Redis stream :data:`~core.names.CORRECTIONS_KEY` (``XADD``, no TTL, no
trimming) with ``{id, text, gold, spans, source, adapter_version, at}``. The
same ``id`` and text corrected again is a new entry; the hash
:data:`~core.names.CORRECTIONS_LATEST_KEY` maps ``sha256(id, text)`` to the
latest entry, so counts and exports take one answer per text and id, the last.

Every correction is checked like any input before it is stored: an ``id``
(``missing_id``), a text (the extract task's checks), a gold object with exactly
the four fields, each a non-empty string or null (``invalid_gold``), every value
found in the text (``ungrounded_gold``), and spans, where given, that cut each
value out of the text (``invalid_spans``). Error messages name fields, never
values or text.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from core.errors import InvalidInput
from core.names import CORRECTIONS_KEY, CORRECTIONS_LATEST_KEY
from core.schema import FIELDS
from core.validation import payload_id, validate_payload

#: Corrections a retrain waits for; the review page shows how many are missing.
RETRAIN_AFTER = 100
SOURCES = ("page", "task")

Spans = dict[str, list[int] | None]

_STORE = """
local entry = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
redis.call('HSET', KEYS[2], ARGV[1], entry)
return entry
"""


@dataclass(frozen=True)
class Correction:
    """One checked correction; ``spans`` has a ``[start, end]`` (characters) per value."""

    id: str
    text: str
    gold: dict[str, str | None]
    spans: Spans
    source: str
    adapter_version: str | None = None
    at: float = 0.0

    @property
    def key(self) -> str:
        """The dedupe key: sha256 of the id and the text."""
        return hashlib.sha256(f"{self.id}\0{self.text}".encode()).hexdigest()

    def row(self) -> dict[str, Any]:
        """The trainer's gold-format row (``trainer.data.parse_row`` reads it)."""
        return {"id": self.id, "text": self.text, "gold": dict(self.gold),
                "tags": ["correction", self.source]}


def check_gold(gold: Any) -> dict[str, str | None]:
    """``gold`` as the four fields in order; raises ``invalid_gold`` on any other shape."""
    if not isinstance(gold, dict):
        raise InvalidInput(f"gold must be an object, got {type(gold).__name__}",
                           code="invalid_gold")
    keys = set(map(str, gold))
    if keys != set(FIELDS):
        raise InvalidInput(f"gold must have exactly the keys {list(FIELDS)}; missing "
                           f"{sorted(set(FIELDS) - keys)}, unknown {sorted(keys - set(FIELDS))}",
                           code="invalid_gold")
    for key in FIELDS:
        value = gold[key]
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise InvalidInput(f"gold {key!r} must be a non-empty string or null, got "
                               f"{type(value).__name__}", code="invalid_gold")
    return {k: gold[k] for k in FIELDS}


def find_spans(text: str, gold: dict[str, str | None], spans: Any = None) -> Spans:
    """Each value's ``[start, end]``: from ``spans`` where given (it must cut the value
    out of ``text``), else the value's first occurrence. Raises ``ungrounded_gold`` for
    a value not in the text, ``invalid_spans`` for a span that does not match."""
    given = spans if isinstance(spans, dict) else {}
    if spans is not None and not isinstance(spans, dict):
        raise InvalidInput("spans must be an object", code="invalid_spans")
    out: Spans = {}
    for key in FIELDS:
        value = gold[key]
        if value is None:
            out[key] = None
            continue
        start = text.find(value)
        if start < 0:
            raise InvalidInput(f"gold {key!r} does not occur in the text", code="ungrounded_gold")
        span = given.get(key)
        if span is not None:
            ok = (isinstance(span, list) and len(span) == 2
                  and all(type(n) is int for n in span) and text[span[0]:span[1]] == value
                  and 0 <= span[0] < span[1])
            if not ok:
                raise InvalidInput(f"span of {key!r} does not cut its value out of the text",
                                   code="invalid_spans")
            start = span[0]
        out[key] = [start, start + len(value)]
    return out


def check(payload: Any, source: str, max_text_chars: int, spans: Any = None,
          adapter_version: str | None = None, now_s: float | None = None) -> Correction:
    """A :class:`Correction` from ``{id, text, gold}``; raises :class:`InvalidInput`
    with the code of the first problem (see the module)."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    correction_id = payload_id(payload)
    if not correction_id or not correction_id.strip():
        raise InvalidInput("correction has no 'id'", code="missing_id")
    _, text = validate_payload(payload, max_text_chars)
    gold = check_gold(payload.get("gold"))
    return Correction(id=correction_id, text=text, gold=gold,
                      spans=find_spans(text, gold, spans), source=source,
                      adapter_version=adapter_version,
                      at=time.time() if now_s is None else now_s)


def store(client: Any, correction: Correction) -> str:
    """Append ``correction`` to the stream (no TTL) and mark it the latest for its key;
    returns the stream entry id."""
    fields = {**asdict(correction), "gold": json.dumps(correction.gold, ensure_ascii=False),
              "spans": json.dumps(correction.spans), "key": correction.key,
              "adapter_version": correction.adapter_version or "", "at": repr(correction.at)}
    # One script: the entry and its "latest" mark are written together or not at all.
    return _text(client.eval(_STORE, 2, CORRECTIONS_KEY, CORRECTIONS_LATEST_KEY,
                             correction.key, *[x for kv in fields.items() for x in kv]))


def count(client: Any) -> int:
    """Distinct corrections stored (one per id and text)."""
    return int(client.hlen(CORRECTIONS_LATEST_KEY))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _from_entry(fields: dict[Any, Any]) -> Correction:
    f = {_text(k): _text(v) for k, v in fields.items()}
    return Correction(id=f["id"], text=f["text"], gold=json.loads(f["gold"]),
                      spans=json.loads(f["spans"]), source=f["source"],
                      adapter_version=f.get("adapter_version") or None, at=float(f["at"]))


def load(client: Any, batch: int = 500) -> list[Correction]:
    """Every correction, the latest per id and text, oldest first."""
    latest: dict[str, Correction] = {}
    start = "-"
    while True:
        entries = client.xrange(CORRECTIONS_KEY, min=start, count=batch)
        for _, fields in entries:
            c = _from_entry(fields)
            latest.pop(c.key, None)  # re-insert: the order follows the latest entry
            latest[c.key] = c
        if len(entries) < batch:
            return list(latest.values())
        start = "(" + _text(entries[-1][0])


def progress(client: Any) -> dict[str, int]:
    """``{stored, retrain_after, needed}``: corrections stored and how many more the
    next retrain waits for."""
    stored = count(client)
    return {"stored": stored, "retrain_after": RETRAIN_AFTER,
            "needed": max(0, RETRAIN_AFTER - stored)}
