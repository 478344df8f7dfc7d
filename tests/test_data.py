"""Tests for trainer.data, trainer.cli_data and the hard evaluation set (no torch)."""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from core.errors import DataError
from core.prompting import SYSTEM_PROMPT
from core.schema import FIELDS, answer_json
from trainer import banks, banks_extra, cli_data
from trainer.data import (
    FORMATS,
    Record,
    data_hash,
    hard_eval_path,
    load_hard_eval,
    load_records,
    record_problems,
    record_to_seed,
    save_records,
    split_of,
    split_records,
    synth_records,
)
from trainer.evalsets import make_hard
from trainer.synth import MAX_SENTENCES

SYNTH_TAGS = (
    "labelled", "unlabelled", "inline", "complaint_first", "complaint_last", "complaint_middle",
    "fullwidth", "halfwidth", "multiline", "oneline", "spaces", "shuffled", "greeting", "closing",
    "missing_name", "missing_address", "missing_email", "missing_question", "stated_absent",
    "distractor_phone", "distractor_order", "distractor_id", "distractor_email",
    "email_faker", "email_free", "email_pinyin", "email_qq",
    "multi_sentence", "quotes", "q_history", "q_closing", "question_label", "subject",
)  # fmt: skip
HARD_TAGS = make_hard.REQUIRED_TAGS


@pytest.fixture(scope="module")
def synth2000() -> list[Record]:
    return synth_records(2000, seed=11)


@pytest.fixture(scope="module")
def hard() -> list[Record]:
    return load_hard_eval()


def _half(sentence: str) -> str:
    return "".join(banks.HALF_WIDTH.get(c, c) for c in sentence)


def _record() -> Record:
    text = "姓名：王芳\n地址：北京市海淀区学院路1号\n问题：宽带总是断网。"
    gold: dict[str, str | None] = {"name": "王芳", "address": "北京市海淀区学院路1号"}
    gold["question"] = "宽带总是断网。"
    return Record(text, gold, ["labelled"])


# --- record type --------------------------------------------------------------


def test_record_orders_gold_keys_and_fills_nulls() -> None:
    r = _record()
    assert tuple(r.gold) == FIELDS
    assert r.gold["email"] is None
    with pytest.raises(DataError, match="adress"):
        Record("x", {"adress": "x"}, [])


def test_record_to_seed_uses_shared_prompt_and_canonical_answer() -> None:
    r = _record()
    row = record_to_seed(r)
    assert row == {
        "system": SYSTEM_PROMPT,
        "instruction": "",
        "input": r.text,
        "output": answer_json(r.gold),
    }


# --- generator ----------------------------------------------------------------


def test_banks_have_enough_distinct_sentences() -> None:
    sentences = [s for group in banks.COMPLAINTS.values() for s in group]
    assert len(sentences) >= 120 and len(set(sentences)) == len(sentences)
    for topic in ("telecom", "power", "property", "ecommerce", "banking", "courier",
                  "heating", "water", "noise"):  # fmt: skip
        assert len(banks.COMPLAINTS[topic]) >= 5
    assert len(banks.COMPLAINTS) >= 10
    assert all(s[-1] in "。！？" for s in sentences)


def test_synth_is_deterministic_per_seed() -> None:
    first = synth_records(40, seed=7)
    synth_records(15, seed=3)  # another seed in between must not leak state
    assert synth_records(40, seed=7) == first
    assert synth_records(40, seed=8) != first
    assert len(first) == 40


def test_plain_synth_is_one_layout_with_every_field() -> None:
    rows = synth_records(200, seed=5, plain=True)
    assert synth_records(200, seed=5, plain=True) == rows
    for r in rows:
        assert record_problems(r) == [], r.text
        assert all(v is not None for v in r.gold.values())
        assert "\n" not in r.text and "distractor" not in " ".join(r.tags)
        # labelled contact details in schema order, then the complaint
        spots = [r.text.index(v) for v in r.gold.values() if v]
        assert spots == sorted(spots) and r.text.endswith(r.gold["question"] or "")
    assert {t for r in rows for t in r.tags} >= {"labelled", "fullwidth", "oneline", "plain"}


def test_unlabelled_share_sets_the_layout_mix() -> None:
    def share(rows: list[Record]) -> float:
        return sum("unlabelled" in r.tags for r in rows) / len(rows)

    assert 0.18 < share(synth_records(400, seed=2)) < 0.32  # the default quarter
    rows = synth_records(400, seed=2, unlabelled=0.5)
    assert 0.42 < share(rows) < 0.58
    assert share(synth_records(100, seed=2, unlabelled=0.0)) == 0.0
    assert share(synth_records(100, seed=2, unlabelled=1.0)) == 1.0
    for r in rows:
        assert record_problems(r) == [], r.text
    with pytest.raises(ValueError, match="share"):
        synth_records(10, seed=2, unlabelled=1.5)
    with pytest.raises(ValueError, match="share"):
        synth_records(10, seed=2, plain=True, unlabelled=0.5)


def test_synth_rows_are_valid_and_grounded(synth2000: list[Record]) -> None:
    rows = synth2000[:500]
    for r in rows:
        assert tuple(r.gold) == FIELDS
        assert record_problems(r) == [], r.text
        question = r.gold["question"] or ""
        for key in ("name", "address", "email"):
            value = r.gold[key]
            assert value is None or (value in r.text and value not in question)
        assert any(v is not None for v in r.gold.values())


def _pattern(template: str) -> str:
    """A regex for a bank template: each placeholder is one run inside the sentence."""
    return re.sub(r"\\\{\w+\\\}", r"[^。！？!?.\\n]+?", re.escape(template))


#: (kind, regex) of every sentence a question may hold, besides the problem sentences.
_TAIL_BANKS = (  # literal sentences first: a template's placeholder may swallow one
    ("injection", banks_extra.INJECTIONS),
    ("history", banks_extra.HISTORY + banks_extra.HISTORY_EN + banks_extra.QUOTED
     + banks_extra.QUOTED_EN),
    ("request", banks_extra.REQUESTS + banks_extra.REQUESTS_EN),
    ("closing", banks_extra.QUESTION_CLOSINGS + banks_extra.QUESTION_CLOSINGS_EN + banks.CLOSINGS
     + banks_extra.STORY_CLOSINGS + banks_extra.EMAIL_CLOSINGS_EN),
)  # fmt: skip


def question_parts(question: str, problems: set[str]) -> list[str]:
    """The kind of each sentence of a synthetic question ("problem", "history",
    "request", "closing", "injection"), in order; AssertionError if one is foreign."""
    alternatives = [("problem", re.escape(s)) for s in problems | {_half(s) for s in problems}]
    for kind, bank in _TAIL_BANKS:
        alternatives += [(kind, _pattern(t)) for t in {*bank, *map(_half, bank)}]
    kinds, pos = [], 0
    while pos < len(question):
        hit = next(((k, m) for k, rx in alternatives if (m := re.compile(rx).match(question, pos))),
                   None)  # fmt: skip
        assert hit is not None, (question[pos:], question)
        kinds.append(hit[0])
        pos = hit[1].end()
        while pos < len(question) and question[pos] in " \n\t":
            pos += 1
    return kinds


def test_synth_question_is_the_whole_complaint(synth2000: list[Record]) -> None:
    """The problem (one topic) first or after one history sentence, then history, a
    request, a closing: 2 to 6 sentences."""
    for r in synth2000[:300]:
        topics = [t.split(":", 1)[1] for t in r.tags if t.startswith("topic:")]
        if r.gold["question"] is None:
            assert not topics
            continue
        kinds = question_parts(r.gold["question"], set(banks.COMPLAINTS[topics[0]]))
        assert "problem" in kinds[:2] and 2 <= len(kinds) <= MAX_SENTENCES, kinds
        assert "multi_sentence" not in r.tags or len(kinds) >= 3
        assert 1 <= kinds.count("problem") <= 2, kinds


def test_synth_covers_every_layout_and_tag(synth2000: list[Record]) -> None:
    counts = Counter(t for r in synth2000 for t in r.tags)
    assert [t for t in SYNTH_TAGS if counts[t] < 10] == []
    assert {f"topic:{t}" for t in banks.COMPLAINTS} <= set(counts)


def test_synth_rates_and_lengths(synth2000: list[Record]) -> None:
    n = len(synth2000)
    for key, low, high in (("name", 0.14, 0.26), ("email", 0.14, 0.26), ("question", 0.02, 0.08)):
        rate = sum(r.gold[key] is None for r in synth2000) / n
        assert low < rate < high, (key, rate)
    lengths = sorted(len(r.text) for r in synth2000)
    assert 60 <= lengths[n // 2] <= 200
    assert sum(40 <= x <= 220 for x in lengths) / n > 0.85
    assert sum("@" in r.text and r.gold["email"] is None for r in synth2000) > 20


# --- loaders ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_every_format_round_trips(tmp_path: Path, fmt: str, suffix: str) -> None:
    records = synth_records(30, seed=5)
    path = save_records(records, tmp_path / f"data{suffix}", fmt=fmt)
    loaded = load_records(path)
    assert [(r.text, r.gold) for r in loaded] == [(r.text, r.gold) for r in records]
    assert data_hash(loaded) == data_hash(records)
    if fmt == "gold":
        assert loaded == records


def test_seed_output_may_be_fenced_or_an_object(tmp_path: Path) -> None:
    r = _record()
    fenced = dict(record_to_seed(r), output="```json\n" + answer_json(r.gold) + "\n```")
    as_object = dict(record_to_seed(r), output=dict(r.gold))
    chat = {
        "messages": [
            {"role": "user", "content": r.text},
            {"role": "assistant", "content": "```" + answer_json(r.gold) + "```"},
        ]
    }
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps([fenced, as_object, chat], ensure_ascii=False), encoding="utf-8")
    assert [x.gold for x in load_records(path)] == [r.gold] * 3


def test_missing_gold_keys_read_as_null(tmp_path: Path) -> None:
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({"text": "张三投诉", "gold": {"name": "张三"}}) + "\n", "utf-8")
    assert load_records(path)[0].gold == {"name": "张三", "address": None, "email": None,
                                          "question": None}  # fmt: skip


BAD_ROWS = [
    (2, {"instruction": "", "input": "张三投诉"}),  # missing output
    (3, {"input": "张三投诉", "output": 42}),  # non-string output
    (4, {"input": "张三投诉", "output": "{not json"}),  # invalid JSON in output
    (5, "{this line is not json"),  # invalid JSON row
    (6, {"text": "张三投诉", "gold": {"name": "李四"}}),  # not grounded
    (7, {"text": "张三投诉", "gold": {"name": "张三", "phone": "1"}}),  # unknown gold key
    (8, {"text": "张三投诉", "gold": {"name": "张三"}, "extra": 1}),  # unknown row key
    (9, {"messages": [{"role": "user", "content": "张三投诉"}]}),  # no assistant turn
    (10, {"foo": "bar"}),  # unknown format
    (11, {"text": "张三投诉", "gold": {"name": 3}}),  # non-string value
]


def _write_bad_file(path: Path) -> None:
    good = json.dumps({"text": "张三投诉", "gold": {"name": "张三"}}, ensure_ascii=False)
    lines = [good]
    for _, row in BAD_ROWS:
        lines.append(row if isinstance(row, str) else json.dumps(row, ensure_ascii=False))
    lines.append(good)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_bad_rows_are_all_listed(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    _write_bad_file(path)
    with pytest.raises(DataError) as info:
        load_records(path)
    listed = {int(n) for n in re.findall(r"row (\d+):", str(info.value))}
    assert listed == {n for n, _ in BAD_ROWS}
    message = str(info.value)
    for reason in (
        "missing field 'output'",
        "got int",
        "not valid JSON",
        "invalid JSON",
        "not found in text",
        "unknown keys",
        "'assistant'",
        "unknown format",
    ):
        assert reason in message  # fmt: skip


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="no rows"):
        load_records(path)


def test_save_writes_nothing_when_a_record_is_bad(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text("old\n", encoding="utf-8")
    bad = [_record(), Record("text", {"name": "absent"}, []), _record()]
    with pytest.raises(DataError, match="row 2"):
        save_records(bad, out)
    assert out.read_text(encoding="utf-8") == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


# --- splits and hashes --------------------------------------------------------


def test_splits_are_deterministic_and_about_80_10_10(synth2000: list[Record]) -> None:
    rows = synth2000[:1000]
    splits = split_records(rows)
    assert splits == split_records(rows)
    assert sum(len(v) for v in splits.values()) == 1000
    assert 750 <= len(splits["train"]) <= 850
    assert 60 <= len(splits["val"]) <= 140 and 60 <= len(splits["test"]) <= 140
    text = rows[0].text
    assert split_of(text) == split_of(f"  {text}  ")
    assert split_of("ＡＢＣ 投诉") == split_of("ABC  投诉")
    assert split_of(text, (1.0, 0.0, 0.0)) == "train"
    with pytest.raises(DataError):
        split_of(text, (0.5, 0.2, 0.1))


def test_data_hash_ignores_tags_but_not_content() -> None:
    r = _record()
    same = Record(r.text, dict(r.gold), ["other"])
    changed = Record(r.text, dict(r.gold, question="宽带总是断网"), [])
    assert data_hash([r]) == data_hash([same])
    assert data_hash([r]) != data_hash([changed])
    assert len(data_hash([])) == 64


# --- hard evaluation set ------------------------------------------------------


def test_hard_set_size_tags_and_grounding(hard: list[Record]) -> None:
    assert hard_eval_path().is_file()
    assert len(hard) >= 160
    counts = Counter(t for r in hard for t in r.tags)
    assert [t for t in HARD_TAGS if counts[t] < 5] == []
    assert all(record_problems(r) == [] for r in hard)
    assert len({r.text for r in hard}) == len(hard)


def test_hard_set_is_reproducible(hard: list[Record]) -> None:
    assert make_hard.build() == hard


def test_hard_set_injections_keep_real_values(hard: list[Record]) -> None:
    injected = [r for r in hard if "injection" in r.tags]
    assert injected
    for r in injected:
        assert r.gold["name"] not in ("管理员", "admin", "张三")
        assert r.gold["email"] not in ("root@localhost", "x@x.com")


def test_hard_v2_is_v1_then_new_hand_written_rows(hard: list[Record]) -> None:
    v2 = load_records(make_hard.OUT_V2)
    assert v2[: len(hard)] == hard  # hard_v1's rows, unchanged
    new = v2[len(hard) :]
    assert len(new) >= 60
    counts = Counter(t for r in new for t in r.tags)
    assert counts["multi_sentence"] >= 25 and counts["quotes"] >= 25, counts
    assert len({r.text for r in v2}) == len(v2)
    for r in new:
        assert record_problems(r) == [], r.text
        assert all(v is None or v in r.text for v in r.gold.values())
        values = [v for v in r.gold.values() if v]
        assert ("quotes" in r.tags) == any('"' in v or "\\" in v for v in values), r.text
        if "multi_sentence" in r.tags:
            assert make_hard.sentences(r.gold["question"] or "") >= 3, r.gold
    assert make_hard.build_v2() == v2


def test_hard_set_shares_nothing_with_the_generator(
    hard: list[Record], synth2000: list[Record]
) -> None:
    hard = load_records(make_hard.OUT_V2)  # hard_v1 and the rows hard_v2 adds
    bank = {s for group in banks.COMPLAINTS.values() for s in group}
    bank |= {_half(s) for s in bank}
    hard_texts = [r.text for r in hard]
    assert [s for s in bank if any(s in t for t in hard_texts)] == []
    assert {r.text for r in synth2000}.isdisjoint(hard_texts)
    for key in ("name", "address", "email"):
        synth_values = {r.gold[key] for r in synth2000} - {None}
        assert synth_values.isdisjoint(r.gold[key] for r in hard), key


# --- CLI ------------------------------------------------------------------------


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tiqu")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_data.add_parser(sub)
    return parser.parse_args(list(argv))


def test_cli_synth_check_convert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "synth.jsonl"
    args = _parse("data", "synth", "--n", "32", "--seed", "3", "-o", str(out), "--format", "gold")
    assert args.func is cli_data.run
    assert args.func(args, None) == 0
    assert len(load_records(out)) == 32
    assert "32" in capsys.readouterr().out.splitlines()[0]
    args = _parse("data", "check", str(out))
    assert args.func(args, None) == 0
    printed = capsys.readouterr().out
    assert "train" in printed and "labelled" in printed
    converted = tmp_path / "chat.json"
    args = _parse("data", "convert", str(out), "-o", str(converted), "--format", "chat")
    assert args.func(args, None) == 0
    assert "messages" in json.loads(converted.read_text(encoding="utf-8"))[0]


def test_cli_reports_bad_rows_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad, out = tmp_path / "bad.jsonl", tmp_path / "out.jsonl"
    _write_bad_file(bad)
    args = _parse("data", "convert", str(bad), "-o", str(out))
    assert args.func(args, None) == 1
    assert "row 11" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(SystemExit):
        _parse("data", "synth", "--n", "0", "-o", str(out))
