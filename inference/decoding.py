"""Decoding modes: copy-constrained (default), JSON-schema, and unconstrained.

Each decoder turns a batch of texts and per-row token budgets into extra
``generate`` keyword arguments (logits processors, stopping criteria).
All modes are greedy and stop as soon as the JSON object closes.
"""

from __future__ import annotations

import json
from typing import Any

from core.errors import ConfigError
from core.settings import Settings


class JsonClosed:
    """Stopping criterion: a row is done once its output holds a complete JSON object.

    Only rows whose newest token contains ``}`` are decoded, so the check costs
    almost nothing on most steps.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        vocab = tokenizer.get_vocab()
        self.closers = {
            i for tok, i in vocab.items() if "}" in tokenizer.convert_tokens_to_string([tok])
        }
        self.prompt_len: int | None = None

    def _closed(self, ids: Any) -> bool:
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        start = text.find("{")
        if start < 0:
            return False
        try:
            json.JSONDecoder().raw_decode(text[start:])
        except ValueError:
            return False
        return True

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        if self.prompt_len is None:
            self.prompt_len = input_ids.shape[1] - 1
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for row in range(input_ids.shape[0]):
            if int(input_ids[row, -1]) in self.closers:
                done[row] = self._closed(input_ids[row, self.prompt_len:].tolist())
        return done


class Unconstrained:
    """Plain greedy decoding; stops at EOS or when the JSON object closes."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def generate_kwargs(self, texts: list[str], budgets: list[int]) -> dict[str, Any]:
        from transformers import StoppingCriteriaList

        criteria = _as_criteria(JsonClosed(self.tokenizer))
        return {"stopping_criteria": StoppingCriteriaList([criteria])}


class CopyDecoder:
    """Values are ``null`` or spans copied from the input (see inference.copydecode)."""

    def __init__(self, tokenizer: Any, settings: Settings) -> None:
        from inference.copydecode import CopyConstraint

        self.constraint = CopyConstraint(tokenizer, email_spans=settings.copy_email_spans)

    def generate_kwargs(self, texts: list[str], budgets: list[int]) -> dict[str, Any]:
        from transformers import LogitsProcessorList

        floor = self.constraint.min_tokens()
        budgets = [max(b, floor) for b in budgets]
        return {"logits_processor": LogitsProcessorList(
            [self.constraint.logits_processor(texts, budgets)])}

    @staticmethod
    def traces(kwargs: dict[str, Any]) -> list[Any]:
        """After ``generate(**kwargs)`` with :meth:`generate_kwargs`'s ``kwargs``: per
        row, in the order of ``texts``, ``{field: FieldTrace}`` (each value's span in
        its text and its confidence; see inference.copydecode), or None for a row
        that did not finish."""
        return list(kwargs["logits_processor"][0].traces())


def _as_criteria(obj: Any) -> Any:
    from transformers import StoppingCriteria

    class _Wrapped(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return obj(input_ids, scores, **kwargs)

    return _Wrapped()


def make_decoder(mode: str, tokenizer: Any, settings: Settings) -> Any:
    """The decoder for ``mode``: ``copy``, ``schema`` or ``none``."""
    if mode == "copy":
        return CopyDecoder(tokenizer, settings)
    if mode == "none":
        return Unconstrained(tokenizer)
    if mode == "schema":
        from inference.schemadecode import SchemaDecoder

        return SchemaDecoder(tokenizer)
    raise ConfigError(f"unknown decoding mode {mode!r}; use copy, schema or none")
