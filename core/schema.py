"""The extraction schema and the result envelope. JSON Schema comes from here."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: Field order is part of the output format: prompts, training targets and the
#: constrained decoder all emit the keys in this order.
FIELDS: tuple[str, ...] = ("name", "address", "email", "question")
SCHEMA_VERSION = "1"


class Complaint(BaseModel):
    """What tiqu extracts from one complaint text. A missing field is ``None``."""

    model_config = ConfigDict(extra="forbid")

    name: str | None
    address: str | None
    email: str | None
    question: str | None


class ErrorInfo(BaseModel):
    code: str
    message: str


class Envelope(BaseModel):
    """One result per task, stored in the result backend.

    With copy decoding, an ok envelope also says where each value is and how
    sure the model was: ``spans`` (field -> ``[start, end]`` character offsets
    into the text as sent, so ``text[start:end]`` is the value; null for a null
    value), ``confidence`` (field -> a probability in [0, 1]; for a null field,
    that the field is absent), ``calibrated`` (whether the adapter's calibration
    map turned the raw scores into P(field exact)) and ``review`` (the fields
    whose confidence is below ``review_below``). In other modes, with the echo
    engine and in error envelopes they are empty and ``calibrated`` is false.
    """

    id: str | None
    status: Literal["ok", "error"]
    result: Complaint | None = None
    error: ErrorInfo | None = None
    grounded: dict[str, bool] | None = None
    spans: dict[str, list[int] | None] = Field(default_factory=dict)
    confidence: dict[str, float] = Field(default_factory=dict)
    calibrated: bool = False
    review: list[str] = Field(default_factory=list)
    model: str | None = None
    adapter_version: str | None = None
    worker: str | None = None
    latency_ms: float | None = None

    @classmethod
    def failure(cls, id: str | None, code: str, message: str, **kw: Any) -> Envelope:
        return cls(id=id, status="error", error=ErrorInfo(code=code, message=message), **kw)


def complaint_json_schema() -> dict[str, Any]:
    """JSON Schema of the model's answer: four keys, each a string or null."""
    return Complaint.model_json_schema()


def answer_json(values: dict[str, Any]) -> str:
    """The canonical answer text: the four keys in order, compact-ish, no ASCII escapes."""
    import json

    return json.dumps({k: values.get(k) for k in FIELDS}, ensure_ascii=False)
