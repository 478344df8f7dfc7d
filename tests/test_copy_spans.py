"""Offsets and confidence of copy-decoded values (inference.copydecode.FieldTrace)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from core.schema import FIELDS
from inference.copydecode import CopyConstraint, FieldTrace, bench_mask, spans_and_confidence
from inference.vocab import EscapedText, source_offset
from tests.test_copydecode import (
    FAST,
    HAND,
    Env,
    _llama,
    byte_fallback_sp_tokenizer,
    byte_ids,
    check_answer,
    generate,
    handmade_tokenizer,
    ids_of,
)
from tests.tiny import CORPUS, build_model

# Pieces that make offsets differ from byte or escape positions, and repeated values.
PIECES = ["张三", "北京市", "ｋｅｆｕ＠ｓｈｏｐ．ｃｏｍ", "ＡＢ１", "\r\n", "\n", "\t", '"', "\\",
          '他说"好"', "😡", "👍🏽", "a@b.cn", "王五", "王五", " ", "无", "\u3000", "e\u0301",
          "订单号 123456"]
TEXTS = st.lists(st.one_of(st.sampled_from(PIECES), st.sampled_from(CORPUS).map(lambda t: t[:20])),
                 min_size=1, max_size=7).map("".join)
#: A text twice around another, so that values recur.
REPEATS = st.tuples(TEXTS, TEXTS).map(lambda ab: ab[0] + ab[1] + ab[0])


# ---------------------------------------------------------------- offsets


@given(text=st.one_of(TEXTS, st.text(max_size=30), st.just("a\ud800b")))
def test_source_offset_maps_every_escaped_boundary_back(text: str) -> None:
    esc = EscapedText(text, None)
    assert json.loads('"' + esc.data.decode() + '"') == text
    for p in range(esc.n + 1):
        if not esc.cut[p]:
            with pytest.raises(ValueError):
                source_offset(text, p)
            continue
        i = source_offset(text, p)
        assert esc.source_offset(p) == i
        assert EscapedText(text[:i], None).data == esc.data[:p]  # the same prefix, escaped
    with pytest.raises(ValueError):
        source_offset(text, esc.n + 1)


def test_source_offset_examples() -> None:
    text = 'a"b\\\r\n张😡\t'
    assert EscapedText(text, None).data == 'a\\"b\\\\\\r\\n张😡\\t'.encode()
    bounds = [source_offset(text, p) for p in (0, 1, 3, 4, 6, 8, 10, 13, 17, 19)]
    assert bounds == list(range(len(text) + 1))
    for p in (2, 5, 7, 9, 11, 12, 14, 18):
        with pytest.raises(ValueError):
            source_offset(text, p)


# ---------------------------------------------------------------- driven by hand


def drive_traces(cc: CopyConstraint, text: str, seq: list[int],
                 seed: int | None = None) -> tuple[dict[str, FieldTrace], list[torch.Tensor]]:
    """Feed ``seq`` then EOS; the row's traces and the masked scores of each step."""
    proc = cc.logits_processor([text], 200)
    ids = torch.zeros(1, 3, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed or 0)
    masks = []
    for t in [*seq, cc.eos_id]:
        scores = torch.randn(1, len(cc.tb.tokens), generator=gen) if seed is not None else \
            torch.zeros(1, len(cc.tb.tokens))
        masks.append(proc(ids, scores).clone())
        assert masks[-1][0, t] > float("-inf"), f"{cc.tb.tokens[t]!r} refused"
        ids = torch.cat([ids, torch.tensor([[t]])], dim=1)
    row = proc.traces()[0]
    assert row is not None
    return row, masks


def tail(*question: str) -> list[int]:
    return ids_of('", "', "address", '":', " null", ",", ' "', "email", '":', " null", ",",
                  ' "', "question", '":', *question)


def test_repeated_value_takes_its_first_occurrence() -> None:
    cc = CopyConstraint(HAND)
    seq = ids_of('{"', "name", '":', ' "', "张三") + tail(' "', "北京", '"}')
    row, _ = drive_traces(cc, "李四张三住在北京张三北京", seq)
    assert row["name"].span == (2, 4) and row["question"].span == (6, 8)
    assert row["address"].span is None and row["email"].span is None


def test_escapes_map_to_original_offsets() -> None:
    cc = CopyConstraint(HAND)
    text = '\r\n他说"好"\\n\n了'
    value = ids_of('\\"') + byte_ids("好") + ids_of('\\"', "\\", "\\", "n", "\\", "n")
    seq = ids_of('{"', "name", '":', ' "') + value + tail(" null", "}")
    row, _ = drive_traces(cc, text, seq)
    start, end = row["name"].span or (0, 0)
    assert text[start:end] == '"好"\\n\n' and (start, end) == (4, 10)


def test_one_token_that_closes_a_value_and_copies_into_the_next() -> None:
    tok = handmade_tokenizer([b'{"', b"name", b'":', b' "', b'",', b'"}', b" null",
                              b"address", b"email", b"question", ' "张三", "address": "北'.encode(),
                              '京", "'.encode()])
    cc = CopyConstraint(tok)
    pieces = [b'{"', b"name", b'":', ' "张三", "address": "北'.encode(), '京", "'.encode(),
              b"email", b'":', b" null", b",", b' "', b"question", b'":', b" null", b"}"]
    seq = [cc.tb.ids_for[p][0] for p in pieces]
    row, _ = drive_traces(cc, "北京张三北京", seq, seed=3)
    assert row["name"].span == (2, 4) and row["address"].span == (0, 2)
    # the opening token also closed the name: one decision, counted once
    assert row["name"].logp_close == 0.0 and row["name"].logp_copy == ()
    assert row["address"].logp_start == row["name"].logp_start


def test_logprobs_are_renormalised_over_the_allowed_tokens() -> None:
    cc = CopyConstraint(HAND)
    seq = ids_of('{"', "name", '":', ' "', "张三", "住在", '", "', "address", '":', " null", ",",
                 ' "', "email", '":', " null", ",", ' "', "question", '":', " null", "}")
    row, masks = drive_traces(cc, "张三住在北京", seq, seed=7)
    lp = [float(torch.log_softmax(m[0].double(), -1)[t]) for m, t in zip(masks, seq, strict=False)]
    name = row["name"]
    assert name.logp_start == pytest.approx(lp[3])  # ' "' opened it
    assert name.logp_copy == pytest.approx((lp[4], lp[5]))
    assert name.logp_close == pytest.approx(lp[6])
    assert row["question"].logp_start == pytest.approx(lp[19])  # " null"
    assert name.joint == pytest.approx(math.exp(sum(lp[3:7])))
    assert name.confidence == pytest.approx(math.exp(lp[3] + lp[6] + (lp[4] + lp[5]) / 2))
    assert row["question"].confidence == pytest.approx(math.exp(lp[19]))


def test_torch_path_traces_like_the_numpy_path() -> None:
    cc = CopyConstraint(HAND)
    seq = ids_of('{"', "name", '":', ' "', "张三") + tail(' "', "北京", '"}')
    got = []
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        proc = cc.logits_processor(["张三住在北京"], 100)
        ids = torch.zeros(1, 3, dtype=torch.long)
        gen = torch.Generator().manual_seed(1)
        for t in [*seq, cc.eos_id]:
            proc(ids, torch.randn(1, len(cc.tb.tokens), generator=gen).to(dtype))
            ids = torch.cat([ids, torch.tensor([[t]])], dim=1)
        got.append(proc.traces()[0])
    for other in got[1:]:
        assert other is not None and got[0] is not None
        for f in FIELDS:
            assert other[f].span == got[0][f].span
            assert other[f].confidence == pytest.approx(got[0][f].confidence, rel=0.05)


# ---------------------------------------------------------------- generation, tiny models


@pytest.fixture(scope="module", params=["bpe", "sp", "sp-bytes"])
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Env:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    if request.param == "sp-bytes":
        tok = byte_fallback_sp_tokenizer()
        model = _llama(len(tok) + 7, tok)
    else:
        path = build_model(tmp_path_factory.mktemp("spans") / request.param, request.param)
        tok = AutoTokenizer.from_pretrained(path)
        tok.padding_side = "left"
        model = AutoModelForCausalLM.from_pretrained(path).eval()
    return Env(tok, model, CopyConstraint(tok))


def traced(env: Env, cc: CopyConstraint, texts: list[str], budgets: list[int], seed: int,
           penalty: float) -> tuple[list[list[int]], list[Any]]:
    """``generate`` with ``cc``; the new ids and the processor's traces."""
    made: list[Any] = []
    make = cc.logits_processor

    def keep(*args: Any) -> Any:
        made.append(make(*args))
        return made[-1]

    cc.logits_processor = keep  # type: ignore[method-assign]
    try:
        rows = generate(Env(env.tok, env.model, cc), texts, budgets, seed, quote_penalty=penalty)
    finally:
        del cc.logits_processor
    return rows, made[0].traces()


@FAST
@given(texts=st.lists(st.one_of(TEXTS, REPEATS), min_size=1, max_size=3), seed=st.integers(0, 1000),
       penalty=st.sampled_from([0.0, 3.0, 8.0]), emails=st.booleans())
def test_spans_locate_every_value_and_confidence_is_a_probability(
        env: Env, texts: list[str], seed: int, penalty: float, emails: bool) -> None:
    cc = CopyConstraint(env.tok, token_bytes=env.cc.tb, email_spans=emails)
    plain = CopyConstraint(env.tok, token_bytes=env.cc.tb, email_spans=emails, trace=False)
    budgets = [cc.min_tokens() + 40] * len(texts)
    rows, traces = traced(env, cc, texts, budgets, seed, penalty)
    assert generate(Env(env.tok, env.model, plain), texts, budgets, seed,
                    quote_penalty=penalty) == rows  # tracing changes no value
    again = traced(env, cc, texts, budgets, seed, penalty)
    assert again == (rows, traces)  # deterministic
    for text, ids, row in zip(texts, rows, traces, strict=True):
        obj = check_answer(env, text, ids, budgets[0])
        assert row is not None and list(row) == list(FIELDS)
        for field in FIELDS:
            value, trace = obj[field], row[field]
            assert 0.0 <= trace.confidence <= 1.0 and 0.0 <= trace.joint <= 1.0
            assert trace.joint <= trace.confidence + 1e-12
            if value is None:
                assert trace.span is None and trace.logp_close is None
                continue
            assert trace.span is not None
            start, end = trace.span
            assert text[start:end] == value
            if not (emails and field == "email"):
                assert start == text.find(value)  # the first occurrence


def test_repeated_and_escaped_values_get_their_first_offsets(env: Env) -> None:
    texts = ["王五" * 6 + "\r\n" + "王五" * 4, '他说"好"\\n\t' * 4, "😡ＡＢ１\r\n" * 5]
    budgets = [env.cc.min_tokens() + 40] * len(texts)
    repeated = 0
    for seed in range(4):
        rows, traces = traced(env, env.cc, texts, budgets, seed, 3.0 * seed)
        for text, ids, row in zip(texts, rows, traces, strict=True):
            obj = check_answer(env, text, ids, budgets[0])
            for field in FIELDS:
                span, value = row[field].span, obj[field]
                assert (span is None) == (value is None)
                if span is not None:
                    assert text[span[0]:span[1]] == value and span[0] == text.find(value)
                    repeated += text.count(value) > 1
    assert repeated > 0


def test_decoder_hands_out_spans_and_confidence() -> None:
    from core.settings import Settings
    from inference.decoding import make_decoder

    dec = make_decoder("copy", HAND, Settings())
    text = "李四张三住在北京"
    kwargs = dec.generate_kwargs([text], [200])
    proc = kwargs["logits_processor"][0]
    ids = torch.zeros(1, 3, dtype=torch.long)
    seq = ids_of('{"', "name", '":', ' "', "张三") + tail(" null", "}")
    for t in [*seq, HAND.eos_token_id]:
        proc(ids, torch.zeros(1, len(dec.constraint.tb.tokens)))
        ids = torch.cat([ids, torch.tensor([[t]])], dim=1)
    (row,) = dec.traces(kwargs)
    out = spans_and_confidence(row)
    assert out["spans"] == {"name": [2, 4], "address": None, "email": None, "question": None}
    assert list(out["confidence"]) == list(FIELDS)
    assert all(0.0 < c <= 1.0 for c in out["confidence"].values())


def test_bench_mask_with_and_without_tracing() -> None:
    texts = ["张三住在北京", "李四张三北京"]
    on = bench_mask(HAND, texts, steps=8, trace=True)
    off = bench_mask(HAND, texts, steps=8, trace=False)
    assert on["mask_ms_per_step"] > 0 and off["mask_ms_per_step"] > 0
