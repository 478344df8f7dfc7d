"""Schema-constrained decoding: every answer is schema-valid JSON, even from a random model.

The proof runs the real engine on tiny random models (both tokenizer families)
and on a model pushed to babble inside strings forever, where only the
closing phase can end the answer within its budget.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import LogitsProcessor

from core.prompting import render_prompt
from core.schema import FIELDS, Complaint, answer_json
from core.settings import Settings
from core.validation import parse_complaint
from inference.engine import Engine
from inference.schemadecode import (
    SchemaConstraint,
    SchemaDecoder,
    closing_tail,
    grammar_for,
    utf8_missing,
)
from tests.tiny import build_model

TEXTS = [
    "张三 北京市朝阳区建国路88号 zhangsan@example.com 宽带断网三天了。",
    "姓名：李四，地址：上海市浦东新区世纪大道100号，邮箱：lisi@test.cn。小区停电没人管！",
    "short",
    '含有"引号"和\\反斜杠\n换行，还有表情 😡',
    "The package never arrived. " * 12,
]


# bpe-seed3 loops on tokens that straddle two characters, so its strings can
# only be closed after a continuation byte finishes the character.
@pytest.fixture(scope="module", params=[("bpe", 0), ("bpe", 3), ("sp", 1)],
                ids=["bpe-seed0", "bpe-seed3", "sp-seed1"])
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    kind, seed = request.param
    folder = build_model(tmp_path_factory.mktemp(f"{kind}{seed}") / "m", kind, seed=seed)
    return Engine(Settings(base_model=str(folder), device="cpu", dtype="float32",
                           decoding="schema"))


answers = st.fixed_dictionaries({k: st.none() | st.text(max_size=12) for k in FIELDS})


@settings(max_examples=300, deadline=None)
@given(answers, st.floats(0, 1))
def test_closing_tail_completes_any_prefix_of_a_valid_answer(values: dict[str, Any],
                                                             cut: float) -> None:
    full = answer_json(values).encode()
    prefix = full[: int(len(full) * cut)]
    done = prefix + closing_tail(prefix)
    data = json.loads(done.decode("utf-8", "replace"))
    assert list(data) == list(FIELDS)
    Complaint.model_validate(data)
    assert closing_tail(full) == b""


def test_closing_tail_finishes_escapes_literals_and_keys() -> None:
    rest = b', "address": null, "email": null, "question": null}'
    assert closing_tail(b'{"name": "a\\') == b'n"' + rest
    assert closing_tail(b'{"name": "a\\u00') == b'00"' + rest
    assert closing_tail(b'{"name": nu') == b"ll" + rest
    assert closing_tail(b'{"name": null, "addr') == b'ess": null, "email": null, "question": null}'
    assert closing_tail(b"") == b'{"name": null, "address": null, "email": null, "question": null}'


def test_utf8_missing_counts_unfinished_characters() -> None:
    char = "囎".encode()
    assert [utf8_missing(b"a" + char[:k]) for k in range(4)] == [0, 2, 1, 0]
    assert utf8_missing("😡".encode()[:1]) == 3


def test_grammar_is_compiled_once_per_tokenizer(engine: Engine) -> None:
    first = grammar_for(engine.tokenizer)
    assert grammar_for(engine.tokenizer) is first
    assert SchemaDecoder(engine.tokenizer).grammar is first


def test_random_model_gives_schema_valid_json_for_every_text(engine: Engine) -> None:
    outcomes = engine.extract_batch(TEXTS, mode="schema")
    for text, out in zip(TEXTS, outcomes, strict=True):
        assert out.error is None, out.error
        assert out.retried is False  # valid on its own, not rescued by the copy retry
        assert isinstance(out.complaint, Complaint)
        assert 0 < out.new_tokens <= engine.budget(text)


class Babble(LogitsProcessor):
    """A model that opens a string for every value and never wants to close it.

    It reads the constraint's own view of each row to know when a value starts.
    """

    def __init__(self, tokenizer: Any, constraint: SchemaConstraint) -> None:
        self.constraint = constraint
        self.bonus = torch.zeros(len(tokenizer))
        self.opening = torch.zeros(len(tokenizer))
        for i, raw in enumerate(constraint.grammar.token_bytes[: len(tokenizer)]):
            if i in tokenizer.all_special_ids:
                continue
            if raw.strip().startswith(b'"'):
                self.opening[i] = 1000.0
            elif b'"' not in raw and b"\\" not in raw:
                self.bonus[i] = -1000.0 if b"n" in raw else 50.0 + len(raw)  # never "null"

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> Any:
        self.constraint.advance(input_ids)
        scores = scores + self.bonus
        for row, out in enumerate(self.constraint.out):
            if closing_tail(bytes(out)).startswith(b"null"):  # a value starts here
                scores[row] += self.opening
        return scores


def _generate(engine: Engine, texts: list[str], budgets: list[int],
              babble: bool) -> list[tuple[str, int]]:
    """``(raw answer, generated token count)`` per text, straight from ``generate``."""
    tok = engine.tokenizer
    enc = tok([render_prompt(tok, t) for t in texts], return_tensors="pt", padding=True,
              add_special_tokens=False)
    decoder = engine._decoder("schema")
    kwargs = decoder.generate_kwargs(texts, budgets)
    if babble:
        constraint = kwargs["logits_processor"][0]
        constraint.prompt_len = enc["input_ids"].shape[1]
        kwargs["logits_processor"].insert(0, Babble(tok, constraint))
    with torch.inference_mode():
        out = engine.model.generate(**enc, **kwargs, do_sample=False, max_new_tokens=max(budgets),
                                    pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    rows = [[t for t in r if t != tok.pad_token_id]
            for r in out[:, enc["input_ids"].shape[1]:].tolist()]
    return [(tok.decode(r), len(r)) for r in rows]


def test_babbling_model_is_closed_within_each_rows_budget(engine: Engine) -> None:
    floor = engine._decoder("schema").min_tokens()  # the all-null answer's length
    extras = (5, 15, 30, 50, 80)
    budgets = [floor + extra for extra in extras]
    raws = _generate(engine, TEXTS, budgets, babble=True)
    assert engine._decoder("schema").last.forced_steps > 0
    for (raw, n_tokens), budget, extra in zip(raws, budgets, extras, strict=True):
        complaint = parse_complaint(raw)
        assert n_tokens <= budget
        if extra >= 15:  # room to babble: it did, and was cut off in time
            assert complaint.name is not None and len(complaint.name) > 3, raw


def test_generation_stops_at_the_closing_brace(engine: Engine) -> None:
    raws = _generate(engine, TEXTS, [engine.budget(t) for t in TEXTS], babble=False)
    for raw, _ in raws:
        assert raw.endswith("}"), raw[-40:]  # no end-of-turn token, nothing after it
        json.loads(raw)
