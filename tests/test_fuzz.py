"""Property tests: whatever comes in, no exception escapes and every item gets an envelope.

Inputs cover what can actually reach a worker through kombu's JSON: any JSON
value, bytes (``{"__type__": "bytes"}``), lone surrogates (JSON ``\\ud800``
escapes), huge and nested values, and model text that is almost JSON.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import InvalidInput, InvalidModelOutput
from core.schema import FIELDS, Complaint, Envelope
from core.settings import Settings
from core.validation import parse_complaint, validate_payload
from workers.runtime import Runtime

MAX_CHARS = 60
INPUT_CODES = {"invalid_payload", "missing_text", "invalid_encoding", "invalid_text_type",
               "empty_text", "text_too_long"}
FUZZ = settings(max_examples=300, deadline=None, database=None)

#: Any Unicode code point, lone surrogates included.
any_char = st.characters(exclude_categories=())
texts = st.text(any_char, max_size=MAX_CHARS + 10) | st.sampled_from(
    ["", " ", "\u3000\n", "\ud800", "a\udfffb", "x" * (MAX_CHARS + 1), "张三 北京"])
scalars = (st.none() | st.booleans() | st.integers() | st.floats() | texts
           | st.binary(max_size=20))
json_like = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
payloads = json_like | st.fixed_dictionaries(
    {"text": json_like | texts | st.binary(max_size=30)},
    optional={"id": json_like, "lang": json_like, "meta": json_like},
)


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@FUZZ
@given(payloads)
def test_validate_payload_returns_clean_text_or_a_coded_error(payload: Any) -> None:
    try:
        id_, text = validate_payload(payload, MAX_CHARS)
    except InvalidInput as err:
        assert err.code in INPUT_CODES
        return
    assert isinstance(text, str) and text.strip() and len(text) <= MAX_CHARS
    assert _encodable(text)
    assert id_ is None or (isinstance(id_, str) and len(id_) <= 200 and _encodable(id_))


def _answer(values: dict[str, Any]) -> str:
    return json.dumps(values, ensure_ascii=False)


field_values = st.none() | texts | st.integers() | st.lists(texts, max_size=2)
answers = st.builds(
    lambda values, extra, before, after, fence: (
        before + ("```json\n" if fence else "") + _answer({**values, **extra})
        + ("\n```" if fence else "") + after),
    st.fixed_dictionaries({}, optional={k: field_values for k in FIELDS}),
    st.dictionaries(texts, field_values, max_size=2),
    texts, texts, st.booleans(),
)
model_text = answers | st.text(any_char, max_size=200) | st.sampled_from(
    ["{", "}", "[" * 5000 + "]" * 5000, '{"name": ' + "9" * 5000 + "}", "```json\n```"])


@FUZZ
@given(model_text)
def test_parse_complaint_returns_four_fields_or_reports_only_the_length(raw: str) -> None:
    try:
        complaint = parse_complaint(raw)
    except InvalidModelOutput as err:
        assert err.raw_len == len(raw)
        assert raw not in str(err) or len(raw) < 2  # the message never quotes the output
        return
    assert isinstance(complaint, Complaint)
    dumped = complaint.model_dump()
    assert list(dumped) == list(FIELDS)
    assert all(v is None or isinstance(v, str) for v in dumped.values())


@settings(max_examples=150, deadline=None, database=None)
@given(st.lists(payloads, min_size=1, max_size=6))
def test_runtime_answers_every_item_with_a_storable_envelope(batch: list[Any]) -> None:
    runtime = Runtime(Settings(max_text_chars=MAX_CHARS), engine_kind="echo")
    items = [(f"task-{i}", payload) for i, payload in enumerate(batch)]
    out = runtime.handle(items)
    assert len(out) == len(items)
    for (_, payload), env in zip(items, out, strict=True):
        envelope = Envelope.model_validate(env)
        # What workers.batching stores: this must never fail.
        json.dumps(env, ensure_ascii=False).encode("utf-8")
        if envelope.status == "ok":
            assert envelope.result is not None and envelope.error is None
            text = payload["text"]
            text = text.decode("utf-8") if isinstance(text, bytes) else text
            assert envelope.result.question == text  # the echo engine, in order
        else:
            assert envelope.error is not None and envelope.error.code in INPUT_CODES


# --- queue items: core.transport.fetch.classify, before kombu reads anything ----------------------

def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


@FUZZ
@given(json_like, st.integers(1, 6))
def test_nesting_exceeds_agrees_with_the_recursive_depth(value: Any, limit: int) -> None:
    from core.validation import nesting_exceeds

    plain = json.loads(json.dumps(value, default=repr))  # bytes become strings
    assert nesting_exceeds(plain, limit) == (_depth(plain) > limit)


def _message(headers: Any, depth: int) -> bytes:
    item = {"body": "", "headers": headers, "content-type": "application/json",
            "properties": {"delivery_tag": "t", "delivery_info": {"exchange": "",
                                                                  "routing_key": "q"},
                           "deep": "DEEP"}}
    deep = "[" * depth + "]" * depth  # built as text: the test's own decoder would recurse
    return json.dumps(item, default=repr).replace('"DEEP"', deep).encode()


queue_items = (st.binary(max_size=400)
               | st.builds(lambda d, k: (k[0] * d + k[1] * d).encode(), st.integers(1, 20000),
                           st.sampled_from([("[", "]"), ('{"a":', "}")]))
               | st.builds(_message, json_like, st.integers(1, 3000))
               | st.builds(lambda v: json.dumps(v, default=repr).encode(), json_like))


@settings(max_examples=300, deadline=None, database=None)
@given(queue_items)
def test_classify_sorts_any_queue_item_without_raising(raw: bytes) -> None:
    from kombu.utils.encoding import bytes_to_str
    from kombu.utils.json import loads

    from core.transport.fetch import MAX_ENVELOPE_DEPTH, Refused, classify

    out = classify(raw, 65536, loads, bytes_to_str)
    if isinstance(out, Refused):
        assert out.code in {"message_too_large", "unreadable_message", "nested_too_deep",
                            "invalid_message"}
        assert out.task_id is None or (isinstance(out.task_id, str) and len(out.task_id) <= 255)
        assert len(raw) > 65536 or out.code != "message_too_large"
        return
    assert len(raw) <= 65536 and _depth(out) <= MAX_ENVELOPE_DEPTH
    assert out["properties"]["delivery_tag"] != "t"  # minted by the worker
