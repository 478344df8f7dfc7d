"""Copy-constrained decoding: automaton units, and generation properties with tiny models."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.prompting import render_prompt
from core.schema import FIELDS, answer_json
from inference.copydecode import CopyConstraint, bench_mask
from inference.vocab import EscapedText, TokenBytes, _byte_decoder
from tests.tiny import CHATML, CORPUS, SPECIALS, _sp_tokenizer, build_model, build_tokenizer

# ---------------------------------------------------------------- tokenizers


def _fast(raw: Any, **extra: Any) -> Any:
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>", bos_token="<|im_start|>", **extra)
    tok.chat_template = CHATML
    tok.padding_side = "left"
    return tok


def handmade_tokenizer(extra: list[bytes]) -> Any:
    """Byte-level vocabulary: the 256 bytes, the specials and ``extra`` pieces."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    to_char = {b: chr(c) for c, b in _byte_decoder().items()}
    pieces = [to_char[b] for b in range(256)]
    pieces += ["".join(to_char[b] for b in piece) for piece in extra]
    vocab = {p: i for i, p in enumerate(SPECIALS + pieces)}
    raw = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.add_special_tokens(SPECIALS)
    return _fast(raw)


def byte_fallback_sp_tokenizer() -> Any:
    """The tiny sentencepiece tokenizer plus ``<0xNN>`` pieces and a Llama-style decoder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    spec = json.loads(_sp_tokenizer(600).to_str())["model"]
    vocab = [(p, s) for p, s in spec["vocab"]] + [(f"<0x{b:02X}>", -30.0) for b in range(256)]
    raw = Tokenizer(models.Unigram(vocab, unk_id=spec["unk_id"], byte_fallback=True))
    raw.pre_tokenizer = pre_tokenizers.Metaspace()
    raw.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    raw.add_special_tokens(SPECIALS + ["<unk>"])
    return _fast(raw, unk_token="<unk>")


# ---------------------------------------------------------------- models


@dataclass
class Env:
    tok: Any
    model: Any
    cc: CopyConstraint


def _llama(vocab_size: int, tok: Any, seed: int = 0) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      bos_token_id=tok.bos_token_id, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models run far faster on one thread than on two contended ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=["bpe", "sp", "sp-bytes"])
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Env:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kind = request.param
    if kind == "sp-bytes":
        tok = byte_fallback_sp_tokenizer()
        model = _llama(len(tok) + 7, tok)  # a model vocabulary wider than the tokenizer's
    else:
        path = build_model(tmp_path_factory.mktemp("copydecode") / kind, kind)
        tok = AutoTokenizer.from_pretrained(path)
        tok.padding_side = "left"
        model = AutoModelForCausalLM.from_pretrained(path).eval()
    return Env(tok, model, CopyConstraint(tok))


class RowBias:
    """Random preferences per row and step, seeded by the row's text, so a random
    model copies varied spans and a row behaves the same in any batch. Tokens
    holding a quote get ``-quote_penalty``, so values run long."""

    def __init__(self, texts: list[str], env: Env, seed: int, quote_penalty: float) -> None:
        self.seeds = [seed * 7919 + zlib.crc32(t.encode("utf-8")) for t in texts]
        self.vocab = env.model.config.vocab_size
        quoted = [b is not None and b'"' in b for b in env.cc.tb.tokens]
        quoted += [False] * (self.vocab - len(quoted))
        self.penalty = torch.tensor(quoted) * quote_penalty
        self.start: int | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> Any:
        if self.start is None:
            self.start = int(input_ids.shape[1])
        step = int(input_ids.shape[1]) - self.start
        rows = [torch.randn(self.vocab, generator=torch.Generator().manual_seed(s + step))
                for s in self.seeds]
        return scores + 4.0 * torch.stack(rows) - self.penalty


def generate(env: Env, texts: list[str], budgets: list[int], seed: int | None = 0,
             constrained: bool = True, quote_penalty: float = 0.0) -> list[list[int]]:
    """Batched greedy generation with left padding; the new ids of each row."""
    from transformers import LogitsProcessorList

    enc = env.tok([render_prompt(env.tok, t) for t in texts], return_tensors="pt",
                  padding=True, add_special_tokens=False)
    procs: list[Any] = []
    if seed is not None:
        procs.append(RowBias(texts, env, seed, quote_penalty))
    if constrained:
        procs.append(env.cc.logits_processor(texts, budgets))
    with torch.no_grad():
        out = env.model.generate(**enc, logits_processor=LogitsProcessorList(procs),
                                 do_sample=False, max_new_tokens=max(budgets),
                                 eos_token_id=env.tok.eos_token_id,
                                 pad_token_id=env.tok.pad_token_id)
    return [row.tolist() for row in out[:, enc["input_ids"].shape[1]:]]


def check_answer(env: Env, text: str, ids: list[int], budget: int,
                 cap: int | None = None) -> dict[str, Any]:
    """Every guarantee of the constraint, for one row."""
    eos = env.tok.eos_token_id
    assert eos in ids, "no EOS"
    n = ids.index(eos) + 1
    assert n <= budget
    assert set(ids[n:]) <= {eos, env.tok.pad_token_id}
    decoded = env.tok.decode(ids[:n], skip_special_tokens=True,
                             clean_up_tokenization_spaces=False)
    raw = b"".join(env.cc.tb.tokens[i] or b"" for i in ids[:n - 1]).decode()
    assert raw == decoded
    obj = json.loads(decoded)
    assert list(obj) == list(FIELDS)
    assert decoded == answer_json(obj)  # exactly the canonical layout
    for value in obj.values():
        if value is not None:
            assert isinstance(value, str) and value and value in text
            assert cap is None or len(value) <= cap
    return obj


# ---------------------------------------------------------------- automaton units

HAND = handmade_tokenizer([b'{"', b"name", b"address", b"email", b"question", b'":', b' "',
                           b'",', b'"}', b'", "', b" null", "张三".encode(), "住在".encode(),
                           "北京".encode(), ' "张'.encode(), '三", "'.encode(),
                           '", "address": "北'.encode(), b'\\"'])


HAND_BYTES = TokenBytes(HAND)


def ids_of(*pieces: bytes | str) -> list[int]:
    """Ids of the handmade vocabulary's pieces."""
    return [HAND_BYTES.ids_for[p.encode() if isinstance(p, str) else p][0] for p in pieces]


def byte_ids(text: str) -> list[int]:
    """``text`` spelt one byte token at a time."""
    return ids_of(*(bytes([b]) for b in text.encode()))


def drive(cc: CopyConstraint, text: str, seq: list[int], budget: int = 200) -> set[int]:
    """Feed ``seq`` through a fresh processor; return the ids allowed next.
    Asserts every token of ``seq`` was allowed when it was fed."""
    proc = cc.logits_processor([text], budget)
    ids = torch.zeros(1, 3, dtype=torch.long)  # a stand-in prompt
    vocab = len(cc.tb.tokens)
    for t in seq:
        allowed = proc(ids, torch.zeros(1, vocab))[0] > float("-inf")
        assert allowed[t], f"{cc.tb.tokens[t]!r} refused"
        ids = torch.cat([ids, torch.tensor([[t]])], dim=1)
    return set(torch.nonzero(proc(ids, torch.zeros(1, vocab))[0] > float("-inf")).flatten()
               .tolist())


def test_straddling_close_token_is_accepted() -> None:
    cc = CopyConstraint(HAND)
    head = ids_of('{"', "name", '":', ' "', "张三")
    nxt = drive(cc, "张三住在北京", head)
    assert ids_of('",', '", "', '"')[0] in nxt
    assert set(ids_of('",', '", "', '"')) <= nxt
    assert ids_of('"}')[0] not in nxt  # "}" only closes the last value
    assert ids_of("住在")[0] in nxt  # the copy may go on
    # closing, the next key and copying on, in one token
    nxt = drive(cc, "张三北京", head + ids_of('", "address": "北'))
    assert byte_ids("京")[0] in nxt
    assert ids_of('", "address": "北')[0] not in drive(cc, "张三住在上海", head)


def test_lit_to_copy_and_close_to_lit_tokens() -> None:
    cc = CopyConstraint(HAND)
    seq = ids_of('{"', "name", '":', ' "张', '三", "', "address", '":', " null", ",", ' "',
                 "email", '":', " null", ",", ' "', "question", '":', ' "', "北京", '"}')
    assert drive(cc, "张三住在北京", seq) == {HAND.eos_token_id}
    # the copy must occur in the text: no '三' right after '北京' here
    head = ids_of('{"', "name", '":', ' "', "北京")
    assert ids_of('三", "')[0] not in drive(cc, "北京张三", head)


def test_value_cannot_end_inside_a_character() -> None:
    cc = CopyConstraint(HAND)
    first = "张".encode()
    nxt = drive(cc, "张三", ids_of('{"', "name", '":', ' "', first[:1]))
    assert not nxt & set(ids_of('"', '",', '", "'))
    assert ids_of(first[1:2])[0] in nxt
    nxt = drive(cc, "张三", ids_of('{"', "name", '":', ' "', first[:1], first[1:2], first[2:]))
    assert set(ids_of('"', '",', '", "')) <= nxt


def test_value_cannot_start_inside_a_character_or_be_empty() -> None:
    cc = CopyConstraint(HAND)
    nxt = drive(cc, "张三", ids_of('{"', "name", '":', ' "'))
    assert ids_of("张".encode()[:1])[0] in nxt
    assert ids_of("张".encode()[1:2])[0] not in nxt
    assert not nxt & set(ids_of('"', '",', '", "'))  # no empty value


def test_escaped_quote_backslash_and_newline_are_copied_escaped() -> None:
    cc = CopyConstraint(HAND)
    text = '他说"好"\\n\n了'
    esc = json.dumps(text, ensure_ascii=False)[1:-1]
    assert EscapedText(text, None).data == esc.encode()
    head = ids_of('{"', "name", '":', ' "') + byte_ids("说")
    nxt = drive(cc, text, head)
    assert ids_of("\\")[0] in nxt and ids_of('\\"')[0] in nxt
    assert ids_of('"')[0] in nxt  # closing right after 说 is fine
    nxt = drive(cc, text, head + ids_of("\\"))
    assert ids_of('"')[0] in nxt  # as the escaped quote's second byte
    assert not nxt & set(ids_of('",', '", "'))  # cannot close inside the escape
    body = ids_of('\\"') + byte_ids("好") + ids_of('\\"', "\\", "\\", "n", "\\", "n")
    nxt = drive(cc, text, head + body)
    assert ids_of('",')[0] in nxt
    seq = head + body + ids_of('",', ' "', "address", '":', " null", ",", ' "', "email", '":',
                               " null", ",", ' "', "question", '":', " null", "}")
    assert drive(cc, text, seq) == {HAND.eos_token_id}
    value = b"".join(cc.tb.tokens[i] or b"" for i in head[4:] + body).decode()
    assert json.loads('"' + value + '"') == '说"好"\\n\n'


def test_torch_path_masks_like_the_numpy_path() -> None:
    """Scores numpy cannot hold (bf16 here, CUDA in service) take the torch path."""
    cc = CopyConstraint(HAND, max_value_chars=2)
    seq = ids_of('{"', "name", '":', ' "') + byte_ids("张三")
    masks = []
    for dtype in (torch.float32, torch.bfloat16):
        proc = cc.logits_processor(["张三住在北京"], 100)
        ids = torch.zeros(1, 3, dtype=torch.long)
        for t in [*seq, None]:
            out = proc(ids, torch.zeros(1, len(cc.tb.tokens), dtype=dtype))
            if t is not None:
                ids = torch.cat([ids, torch.tensor([[t]])], dim=1)
        assert out.dtype == dtype
        masks.append(out.float())
    assert torch.equal(masks[0], masks[1])
    assert masks[0][0, ids_of('",')[0]] > 0  # the closing bias at the cap
    assert masks[0][0, ids_of("住在")[0]] == float("-inf")  # no third character


def test_lone_surrogate_is_copied_as_its_escape() -> None:
    esc = EscapedText("a\ud800b", None)
    assert esc.data == b"a\\ud800b"
    assert json.loads('"' + esc.data.decode() + '"') == "a\ud800b"
    assert esc.cut.tolist() == [True, True] + [False] * 5 + [True, True]


BPE_TOKENIZER = build_tokenizer("bpe")


@settings(max_examples=40, deadline=None, database=None)
@given(data=st.data())
def test_every_grounded_answer_is_accepted_as_the_tokenizer_spells_it(data: st.DataObject) -> None:
    """Soundness of the mask: any canonical answer whose values are non-empty
    spans of the text is allowed token by token, then only EOS."""
    text = data.draw(TEXTS.filter(bool))
    values: dict[str, str | None] = {}
    for name in FIELDS:
        a = data.draw(st.integers(0, len(text) - 1))
        b = data.draw(st.integers(a + 1, len(text)))
        values[name] = text[a:b] if data.draw(st.booleans()) else None
    ids = BPE_TOKENIZER(answer_json(values), add_special_tokens=False)["input_ids"]
    cc = CopyConstraint(BPE_TOKENIZER)
    assert drive(cc, text, ids, budget=len(ids) + 200) == {BPE_TOKENIZER.eos_token_id}


def test_budget_forces_closing() -> None:
    cc = CopyConstraint(HAND)
    m = cc.min_tokens()
    with pytest.raises(ValueError):
        cc.logits_processor(["张三"], m - 1)
    # copying 李 takes 3 byte tokens and '", "' (5 tokens) where ' null', ',', ' "' take 3
    head = ids_of('{"', "name", '":')
    assert ids_of(' "')[0] not in drive(cc, "李四", head, budget=m + 1)
    assert ids_of(' "')[0] in drive(cc, "李四", head, budget=m + 2)
    # '三", "' copies 三 and closes in one token: cheaper than null
    assert ids_of(' "')[0] in drive(cc, "张三", head, budget=m)
    # once a value runs long, only tokens that let the answer finish in time remain
    seq = head + ids_of(' "') + byte_ids("李")
    assert drive(cc, "李四", seq, budget=m + 2) == set(ids_of('", "'))


def test_token_bytes_of_sentencepiece_and_byte_fallback() -> None:
    sp = byte_fallback_sp_tokenizer()
    tb = TokenBytes(sp)
    assert tb.tokens[sp.convert_tokens_to_ids("<0xE5>")] == b"\xe5"
    assert tb.tokens[sp.convert_tokens_to_ids("▁")] == b" "
    assert tb.tokens[sp.eos_token_id] is None
    text = "Extract 张三 😡!"
    ids = sp(text, add_special_tokens=False)["input_ids"]
    assert b"".join(tb.tokens[i] or b"" for i in ids).decode() == " " + text


# ---------------------------------------------------------------- generation properties

PIECES = (list("张三李四王五北京市朝阳区上海浦东广州天河宽带断网电梯物业费邮箱地址姓名")
          + list("，。！？：；（）“”《》＠１２３ＡＢ") + list("😡🎉👍🏠")
          + ['"', "\\", "\n", "\t", "\x01", " ", "@", ".", "a", "b", "z", "1", "0", "é", "ß"])
SLICES = st.builds(lambda s, a, b: s[min(a, b):max(a, b) + 1], st.sampled_from(CORPUS),
                   st.integers(0, 80), st.integers(0, 80))
TEXTS = st.one_of(st.text(alphabet=st.sampled_from(PIECES), min_size=1, max_size=24), SLICES,
                  st.lists(st.one_of(SLICES, st.sampled_from(PIECES)), min_size=1, max_size=5)
                  .map("".join))
FAST = settings(max_examples=6, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(texts=st.lists(TEXTS, min_size=1, max_size=3), extra=st.lists(st.integers(0, 30),
                                                                      min_size=3, max_size=3),
       seed=st.integers(0, 1000), penalty=st.sampled_from([0.0, 3.0, 8.0]))
def test_generation_is_always_valid_grounded_and_within_budget(
        env: Env, texts: list[str], extra: list[int], seed: int, penalty: float) -> None:
    budgets = [env.cc.min_tokens() + e for e in extra[:len(texts)]]
    rows = generate(env, texts, budgets, seed, quote_penalty=penalty)
    for text, ids, budget in zip(texts, rows, budgets, strict=True):
        check_answer(env, text, ids, budget)


def test_least_budget_still_gives_valid_json(env: Env) -> None:
    texts = ["张三 北京市朝阳区 zhangsan@example.com 宽带断网", "王", '"\\\n']
    m = env.cc.min_tokens()
    for text, ids in zip(texts, generate(env, texts, [m] * 3), strict=True):
        check_answer(env, text, ids, m)  # null, or a copy no dearer than null


def test_value_cap(env: Env) -> None:
    cc = CopyConstraint(env.tok, token_bytes=env.cc.tb, max_value_chars=3)
    capped = Env(env.tok, env.model, cc)
    texts = [CORPUS[0], CORPUS[1], CORPUS[5]]
    budgets = [cc.min_tokens() + 60] * 3
    rows = generate(capped, texts, budgets, seed=3, quote_penalty=8.0)
    for text, ids in zip(texts, rows, strict=True):
        check_answer(capped, text, ids, budgets[0], cap=3)


def test_batch_rows_match_solo_runs(env: Env) -> None:
    texts = [CORPUS[0], "王五", CORPUS[5][:40], '他说"不行"\\n然后走了']
    m = env.cc.min_tokens()
    budgets = [m + 50, m + 5, m + 30, m + 40]
    batch = generate(env, texts, budgets, seed=11, quote_penalty=3.0)
    for text, budget, row in zip(texts, budgets, batch, strict=True):
        check_answer(env, text, row, budget)
        solo = generate(env, [text], [budget], seed=11, quote_penalty=3.0)[0]
        n = row.index(env.tok.eos_token_id) + 1
        assert solo[:n] == row[:n]


def _is_answer(text: str, decoded: str) -> bool:
    try:
        obj = json.loads(decoded)
        return list(obj) == list(FIELDS) and all(v is None or v in text for v in obj.values())
    except Exception:
        return False


def test_garbage_model_output_becomes_valid(env: Env) -> None:
    text = CORPUS[1]
    budget = env.cc.min_tokens() + 40
    free = generate(env, [text], [budget], seed=5, constrained=False)[0]
    assert not _is_answer(text, env.tok.decode(free, skip_special_tokens=True))
    check_answer(env, text, generate(env, [text], [budget], seed=5)[0], budget)


def test_bench_mask_reports_timings() -> None:
    out = bench_mask(HAND, ["张三住在北京", "李四"], steps=5)
    assert out["mask_ms_per_step"] > 0 and out["build_ms_per_request"] > 0


# ---------------------------------------------------------------- e-mail spans


def test_email_spans_find_half_and_full_width_addresses() -> None:
    from inference.vocab import email_spans

    text = "邮箱：li64@example.org，抄送ｋｅｆｕ＠ｓｈｏｐ．ｃｏｍ；电话13800000000；无@"
    found = [text[a:b] for a, b in email_spans(text)]
    assert found == ["li64@example.org", "ｋｅｆｕ＠ｓｈｏｐ．ｃｏｍ"]
    assert email_spans("邮箱：无，QQ 12345") == []


def test_email_field_copies_only_a_whole_address() -> None:
    cc = CopyConstraint(HAND, email_spans=True)
    text = "张三 a@b.cn 北京"
    head = ids_of('{"', "name", '":', " null", ",", ' "', "address", '":', " null", ",", ' "',
                  "email", '":')
    # no address in the text: the email value can only be null
    assert ids_of(' "')[0] not in drive(cc, "张三住在北京", head)
    assert ids_of(' "')[0] in drive(cc, text, head)
    nxt = drive(cc, text, head + ids_of(' "'))
    assert nxt == set(byte_ids("a"))  # only where an address starts
    nxt = drive(cc, text, head + ids_of(' "') + byte_ids("a@b"))
    assert not nxt & set(ids_of('"', '",', '", "'))  # not before the address ends
    nxt = drive(cc, text, head + ids_of(' "') + byte_ids("a@b.cn"))
    assert set(ids_of('",', '", "')) <= nxt and byte_ids(" ")[0] not in nxt
    # other fields copy as before, and the rule is off by default
    assert ids_of(' "')[0] in drive(CopyConstraint(HAND), "张三住在北京", head)
    name = drive(cc, text, ids_of('{"', "name", '":', ' "'))
    assert byte_ids("a")[0] in name and ids_of("张三")[0] in name


@FAST
@given(texts=st.lists(st.lists(st.one_of(SLICES, st.sampled_from(PIECES), st.sampled_from(
    ["a@b.cn", "ｘ＠ｙ．ｃｏｍ", "li.64@example.org", "@", "无"])), min_size=1, max_size=6)
    .map("".join), min_size=1, max_size=3), seed=st.integers(0, 1000))
def test_email_value_is_null_or_one_whole_address(env: Env, texts: list[str], seed: int) -> None:
    from inference.vocab import email_spans

    cc = CopyConstraint(env.tok, token_bytes=env.cc.tb, email_spans=True)
    typed = Env(env.tok, env.model, cc)
    budgets = [cc.min_tokens() + 40] * len(texts)
    rows = generate(typed, texts, budgets, seed, quote_penalty=3.0)
    for text, ids, budget in zip(texts, rows, budgets, strict=True):
        email = check_answer(typed, text, ids, budget)["email"]
        assert email is None or email in [text[a:b] for a, b in email_spans(text)]


def test_every_gold_email_is_one_whole_address() -> None:
    """The rule's premise: no data set has a gold email that the rule would refuse."""
    from inference.vocab import email_spans
    from trainer.data import load_hard_eval, synth_records

    rows = [*load_hard_eval(), *synth_records(300, 4), *synth_records(300, 4, extended=True,
                                                                       rare_names=True)]
    golds = [(r.text, r.gold["email"]) for r in rows if r.gold["email"]]
    assert len(golds) > 400
    for text, email in golds:
        assert email in [text[a:b] for a, b in email_spans(text)], (email, text)
