"""Model failures inside the real Engine on the tiny model: out-of-memory splitting,
batch-wide errors, and model output that fails validation.

These are unit tests of the engine (no queue): the model's ``generate`` is
wrapped to fail or to return fixed text, everything else is the real code path.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from core.errors import InvalidModelOutput
from core.schema import Envelope
from core.settings import Settings
from inference.decoding import Unconstrained
from inference.engine import Engine, Outcome, _is_oom
from workers.breaker import EngineFailed
from workers.runtime import Runtime

TEXTS = [  # distinct lengths and no text inside another, so a prompt names its text
    "张三 北京市朝阳区建国路88号 宽带断网三天了。",
    "李四，上海市浦东新区世纪大道100号，lisi@test.cn，小区停电。",
    "王五 广州 快递丢件",
    "The package never arrived; write to me at amy@example.com please.",
    "物业费年年涨，电梯坏了一个月没人修，楼道灯也不亮，噪音扰民。",
    "赵六 深圳市南山区科技园 水费异常",
    "Bob, 12 Main St, bob@mail.com, refund not received after 30 days.",
]
GARBAGE = "not json at all {"


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> Iterator[Engine]:
    import torch

    # One thread: on a busy 2-core machine, two spinning threads make each
    # step of this tiny model about 20x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    # The static scheduler: these tests wrap generate() (tests/test_continuous.py
    # covers the continuous scheduler's out-of-memory split).
    settings = Settings(base_model=str(tiny_model), device="cpu", dtype="float32",
                        decoding="none", max_new_tokens=16, extra_new_tokens=8,
                        scheduler="static")
    yield Engine(settings)
    torch.set_num_threads(threads)


@dataclass
class Generations:
    """What the wrapped ``generate`` saw: one dict per call (rows, texts, oom, new)."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    max_rows: int = 2

    def ran(self, text: str | None = None) -> list[dict[str, Any]]:
        """Calls that ran (did not raise), optionally only those carrying ``text``."""
        return [c for c in self.calls if not c.get("oom") and (text is None or text in c["texts"])]


@pytest.fixture()
def gen(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[Generations]:
    """Wrap ``model.generate``: batches of more than ``max_rows`` raise CUDA OOM."""
    record = Generations()
    real = engine.model.generate
    tok = engine.tokenizer

    def generate(**kwargs: Any) -> Any:
        ids = kwargs["input_ids"]
        prompts = [tok.decode(row, skip_special_tokens=True) for row in ids]
        call: dict[str, Any] = {"rows": ids.shape[0],
                                "texts": [t for p in prompts for t in TEXTS if t in p]}
        record.calls.append(call)
        if ids.shape[0] > record.max_rows:
            call["oom"] = True
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        out = real(**kwargs)
        call["new"] = out[:, ids.shape[1]:]
        return out

    monkeypatch.setattr(engine.model, "generate", generate)
    yield record


def _expected(engine: Engine, call: dict[str, Any], text: str) -> Outcome:
    return engine._outcome(call["new"][call["texts"].index(text)])


def _same(a: Outcome, b: Outcome) -> bool:
    return (a.complaint == b.complaint and type(a.error) is type(b.error)
            and a.new_tokens == b.new_tokens)


def test_oom_batch_is_split_and_every_text_answered_in_order(
    engine: Engine, gen: Generations
) -> None:
    splits_before = engine.stats.splits
    outcomes = engine._run_split(list(TEXTS), "none")

    assert [c["rows"] for c in gen.calls if c.get("oom")] == [7, 3, 4]
    assert all(c["rows"] <= 2 for c in gen.ran())
    assert sorted(t for c in gen.ran() for t in c["texts"]) == sorted(TEXTS)
    assert engine.stats.splits - splits_before == 3
    assert len(outcomes) == len(TEXTS)
    # Outcome i is what the model generated for text i, in whichever sub-batch it ran.
    for text, outcome in zip(TEXTS, outcomes, strict=True):
        (call,) = gen.ran(text)
        assert _same(outcome, _expected(engine, call, text)), text
        assert "out of memory" not in str(outcome.error or "")


def test_extract_batch_keeps_input_order_under_oom(
    engine: Engine, gen: Generations, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Invalid rows are retried in "copy" mode; an unconstrained stand-in keeps
    # this test about ordering, whatever the copy decoder does.
    monkeypatch.setitem(engine._decoders, "copy", Unconstrained(engine.tokenizer))
    texts = TEXTS[:5]
    outcomes = engine.extract_batch(texts, mode="none")
    assert len(outcomes) == len(texts)
    for text, outcome in zip(texts, outcomes, strict=True):
        runs = gen.ran(text)
        assert len(runs) == (2 if outcome.retried else 1), text
        assert _same(outcome, _expected(engine, runs[-1], text)), text


def test_one_text_that_still_runs_out_of_memory_fails_alone(
    engine: Engine, gen: Generations
) -> None:
    gen.max_rows = 0
    outcomes = engine._run_split(TEXTS[:3], "none")
    assert [c["rows"] for c in gen.calls] == [3, 1, 2, 1, 1]
    assert all(o.complaint is None and "out of memory" in str(o.error) for o in outcomes)

    runtime = Runtime(engine.settings)
    runtime._engine = engine
    envs = runtime.handle([(f"t{i}", {"text": t, "id": f"c{i}"}) for i, t in enumerate(TEXTS[:3])])
    assert [e["id"] for e in envs] == ["c0", "c1", "c2"]
    assert all(Envelope.model_validate(e).status == "error" for e in envs)


def test_other_runtime_errors_are_not_mistaken_for_oom(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(**_: Any) -> Any:
        raise RuntimeError("shape mismatch in attention")

    monkeypatch.setattr(engine.model, "generate", broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        engine._run_split(TEXTS[:4], "none")
    # Not the input's fault: no envelopes; the worker's breaker puts the batch back.
    runtime = Runtime(engine.settings)
    runtime._engine = engine
    with pytest.raises(EngineFailed):
        runtime.handle([("t", {"text": TEXTS[0]}), ("u", {"text": ""})])
    assert runtime.breaker.failures == 1


@pytest.mark.parametrize("message", [
    "CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported",
    "CUDA error: device-side assert triggered",
    "CUDA error: an illegal memory access was encountered",
    "cudaErrorLaunchFailure: unspecified launch failure",
    "CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasGemmEx( handle, opa, ...)`",
])
def test_a_cuda_error_is_not_split_as_out_of_memory(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, message: str
) -> None:
    calls: list[int] = []

    def broken(**kwargs: Any) -> Any:
        calls.append(kwargs["input_ids"].shape[0])
        raise RuntimeError(message)

    monkeypatch.setattr(engine.model, "generate", broken)
    splits = engine.stats.splits
    with pytest.raises(RuntimeError):
        engine._run_split(TEXTS[:4], "none")
    assert calls == [4] and engine.stats.splits == splits  # one try, no split
    assert not _is_oom(RuntimeError(message))


def test_real_out_of_memory_errors_are_recognised() -> None:
    import torch

    assert _is_oom(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert _is_oom(torch.cuda.OutOfMemoryError("CUDA out of memory."))
    assert _is_oom(MemoryError())
    assert _is_oom(RuntimeError("[enforce fail at alloc_cpu.cpp:83] DefaultCPUAllocator: "
                                "can't allocate memory: you tried to allocate 8 bytes. "
                                "Error code 12 (Cannot allocate memory)"))


def _fixed_output(engine: Engine, monkeypatch: pytest.MonkeyPatch, text: str) -> list[int]:
    """Make ``generate`` answer every row with ``text``; return the rows' sizes seen."""
    import torch

    ids = engine.tokenizer(text, add_special_tokens=False)["input_ids"]
    sizes: list[int] = []

    def generate(**kwargs: Any) -> Any:
        prompt = kwargs["input_ids"]
        sizes.append(prompt.shape[0])
        tail = torch.tensor([ids] * prompt.shape[0], dtype=prompt.dtype)
        return torch.cat([prompt, tail], dim=1)

    monkeypatch.setattr(engine.model, "generate", generate)
    return sizes


def test_invalid_output_is_retried_once_then_reported_by_length(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = _fixed_output(engine, monkeypatch, GARBAGE)
    modes: list[str] = []
    real_generate = engine._generate

    def tracking(texts: list[str], mode: str, report: Any = None) -> list[Outcome]:
        modes.append(mode)
        return real_generate(texts, mode, report)

    monkeypatch.setattr(engine, "_generate", tracking)
    # The model is replaced, so no decoder's processors run; the copy slot only has to exist.
    monkeypatch.setitem(engine._decoders, "copy", Unconstrained(engine.tokenizer))
    outcomes = engine.extract_batch(TEXTS[:3], mode="none")
    assert modes == ["none", "copy"] and sizes == [3, 3]
    for o in outcomes:
        assert o.retried and isinstance(o.error, InvalidModelOutput)
        assert o.error.raw_len == len(GARBAGE)

    runtime = Runtime(engine.settings)
    runtime._engine = engine
    envs = runtime.handle([("t", {"text": TEXTS[0], "id": "a"})])
    err = envs[0]["error"]
    assert err["code"] == "invalid_model_output"
    assert re.search(rf"raw output was {len(GARBAGE)} chars", err["message"])
    assert "not json" not in err["message"]


def test_copy_mode_output_is_not_retried(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = _fixed_output(engine, monkeypatch, GARBAGE)
    monkeypatch.setitem(engine._decoders, "copy", Unconstrained(engine.tokenizer))
    outcomes = engine.extract_batch(TEXTS[:2], mode="copy")
    assert sizes == [2]  # a second greedy copy pass would repeat the first
    assert all(isinstance(o.error, InvalidModelOutput) and not o.retried for o in outcomes)


def test_copy_retry_answers_with_grounded_values(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The copy decoder needs room for the answer's skeleton (about 21 tokens here).
    roomy = engine.settings.model_copy(update={"max_new_tokens": 40, "extra_new_tokens": 32})
    monkeypatch.setattr(engine, "settings", roomy)
    outcomes = engine.extract_batch(TEXTS[:4], mode="none")
    retried = [(t, o) for t, o in zip(TEXTS[:4], outcomes, strict=True) if o.retried]
    assert retried, "the random tiny model produced valid JSON unconstrained"
    for text, o in retried:
        assert o.complaint is not None, o.error
        for value in o.complaint.model_dump().values():
            assert value is None or value in text
