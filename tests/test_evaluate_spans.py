"""Values cut short or at a quote: the evaluation counters, and the copy decoder
copying a question with quotes, backslashes and line breaks back exactly."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from core.prompting import render_prompt
from core.schema import FIELDS, Complaint, answer_json
from inference.copydecode import CopyConstraint
from tests.test_copydecode import drive
from tests.tiny import build_model
from trainer.data import Record, synth_records
from trainer.evaluate import FOCUS_TAGS, cut_at_quote, cut_short, format_table, score

QUESTION = '系统里一直显示"处理中"，截图在D:\\投诉\\单据里。\n请尽快处理，谢谢！'
TEXT = f"姓名：韦思远\n情况说明：{QUESTION}\n邮箱：weisy@example.org"
GOLD: dict[str, str | None] = {"name": "韦思远", "address": None, "email": "weisy@example.org",
                               "question": QUESTION}  # fmt: skip


# --- the counters -------------------------------------------------------------------


def test_cut_short_is_a_strict_part_of_the_gold() -> None:
    gold = "宽带断了三天。请尽快修好。谢谢！"
    assert cut_short("宽带断了三天。", gold)  # a prefix
    assert cut_short("请尽快修好。", gold)  # an inner part
    assert not cut_short(gold, gold)
    assert not cut_short("宽带断了三天。请尽快修好。谢谢！还有", gold)  # longer
    assert not cut_short("电费太贵。", gold)
    assert not cut_short(None, gold) and not cut_short("宽带", None)
    assert not cut_short("", gold)
    assert cut_short("宽带断了三天。 ", gold)  # compared after normalisation


def test_cut_at_quote_is_the_gold_up_to_a_quote() -> None:
    gold = '系统里一直显示"处理中"，没有进展。'
    assert cut_at_quote("系统里一直显示", gold)
    assert cut_at_quote('系统里一直显示"处理中', gold)  # up to the second quote
    assert not cut_at_quote("系统里一直", gold)  # cut, but not at a quote
    assert not cut_at_quote(gold, gold)
    assert not cut_at_quote("宽带", "宽带断了。")  # no quote in the gold
    assert not cut_at_quote(None, gold)
    assert not cut_at_quote("", '"处理中"')


def _records() -> list[Record]:
    long_q = "停车场多收了钱。我10月打过电话。请退款。"
    quoted = '页面显示"已办结"，可问题没解决。'
    return [
        Record(f"张一 {long_q}", {"name": "张一", "question": long_q}, ["multi_sentence"]),
        Record(f"李二 {quoted}", {"name": "李二", "question": quoted}, ["quotes"]),
        Record(f"王三 {quoted}", {"name": "王三", "question": quoted}, ["quotes", "oneline"]),
        Record("赵四 断网了。", {"name": "赵四", "question": "断网了。"}, ["oneline"]),
    ]


def _c(name: str, question: str) -> Complaint:
    return Complaint(name=name, address=None, email=None, question=question)


def _preds() -> list[Complaint | None]:
    return [
        _c("张一", "停车场多收了钱。"),  # cut short
        _c("李二", "页面显示"),  # cut at the quote
        _c("王", '页面显示"已办结"，可问题没解决。'),  # name cut short
        None,
    ]


def test_score_counts_cuts_per_field_and_reports_the_focus_tags() -> None:
    report = score(_preds(), _records())
    overall = report["overall"]
    assert overall["cut_short"] == {"name": 1, "address": 0, "email": 0, "question": 2}
    assert overall["cut_at_quote"] == {"name": 0, "address": 0, "email": 0, "question": 1}
    assert list(report["focus"]) == list(FOCUS_TAGS)
    quotes = report["focus"]["quotes"]
    assert quotes["n"] == 2 and quotes["exact"]["question"] == 0.5
    assert quotes["cut_at_quote"]["question"] == 1
    assert report["focus"]["multi_sentence"]["cut_short"]["question"] == 1
    assert report["tags"]["quotes"] == quotes
    assert json.loads(json.dumps(report)) == report  # the JSON report holds it all


def test_table_shows_focus_tags_first_and_the_cut_counts() -> None:
    report = score(_preds(), _records())
    lines = format_table(report).splitlines()
    assert "cut" in lines[0] and "q_f1" in lines[0]
    assert lines[2].startswith("all") and lines[3].startswith("multi_sentence")
    assert lines[4].startswith("quotes")
    assert lines[2].split()[-2:] == ["3", "1"]  # cut short, cut at a quote (all fields)
    assert lines[-2] == "cut_short (all rows): name 1  address 0  email 0  question 2"
    assert lines[-1] == "cut_at_quote (all rows): name 0  address 0  email 0  question 1"
    assert sum(line.startswith("quotes") for line in lines) == 1  # not listed twice


def test_report_without_focus_tags_still_formats() -> None:
    rows = [Record("赵四 断网了。", {"name": "赵四", "question": "断网了。"}, ["oneline"])]
    report = score([_c("赵四", "断网了。")], rows)
    assert report["focus"] == {}
    assert format_table(report).splitlines()[2].startswith("all")


# --- the copy decoder and values with quotes -------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_model(tmp_path_factory.mktemp("spans") / "bpe", "bpe")
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    return tok, AutoModelForCausalLM.from_pretrained(path).eval()


class Follow:
    """Pushes generation along ``target`` (token ids), whatever the model prefers."""

    def __init__(self, target: list[int]) -> None:
        self.target, self.start = target, -1

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> Any:
        if self.start < 0:
            self.start = int(input_ids.shape[1])
        step = int(input_ids.shape[1]) - self.start
        bonus = torch.zeros_like(scores)
        if step < len(self.target):
            bonus[:, self.target[step]] = 1e4
        return scores + bonus


def test_gold_with_quotes_and_backslashes_is_an_allowed_copy(tiny: tuple[Any, Any]) -> None:
    tok, _ = tiny
    ids = tok(answer_json(GOLD), add_special_tokens=False)["input_ids"]
    assert drive(CopyConstraint(tok), TEXT, ids, budget=len(ids) + 50) == {tok.eos_token_id}


def test_copy_decoder_round_trips_a_question_with_quotes(tiny: tuple[Any, Any]) -> None:
    """A tiny model pushed along the gold answer, through the copy constraint, gives
    back the question with its quote, backslashes and line break exactly."""
    from transformers import LogitsProcessorList

    tok, model = tiny
    target = tok(answer_json(GOLD), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    enc = tok([render_prompt(tok, TEXT)], return_tensors="pt", add_special_tokens=False)
    budget = len(target) + 20
    procs = LogitsProcessorList([Follow(target), CopyConstraint(tok).logits_processor([TEXT],
                                                                                      budget)])
    with torch.no_grad():
        out = model.generate(**enc, logits_processor=procs, do_sample=False,
                             max_new_tokens=budget, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id)
    new = out[0, enc["input_ids"].shape[1]:].tolist()
    answer = tok.decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    got = json.loads(answer)
    assert got == GOLD and got["question"] == QUESTION
    assert Complaint(**got).question == QUESTION


def test_synthetic_quoted_answers_are_allowed_copies(tiny: tuple[Any, Any]) -> None:
    """Answers of generated records with quotes are paths the copy decoder allows."""
    tok, _ = tiny
    cc = CopyConstraint(tok)
    rows = [r for r in synth_records(300, 21, extended=True) if "quotes" in r.tags][:4]
    assert len(rows) == 4
    for r in rows:
        gold = {k: r.gold[k] for k in FIELDS}
        ids = tok(answer_json(gold), add_special_tokens=False)["input_ids"]
        assert drive(cc, r.text, ids, budget=len(ids) + 50) == {tok.eos_token_id}
