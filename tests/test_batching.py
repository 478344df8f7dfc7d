"""Dynamic batching through a real worker: every task gets its own answer back.

A batch mixes many tasks into one ``generate``; these tests check that the
answers are split back to the right tasks (echo engine: the answer is the
text itself; tiny model: the answer equals an unbatched run on that text
alone), and that one bad item in a batch does not cost the others.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis

from core.settings import Settings
from inference.engine import Engine
from producer import Client
from tests.conftest import start_worker, worker_env


def _texts(n: int) -> list[str]:
    """Distinct texts of very different lengths, so batches need padding and sorting."""
    return [f"投诉{i}：编号 {i * 7919} " + "宽带断网，客服不回。" * (i % 9) for i in range(n)]


def test_echo_worker_answers_each_task_with_its_own_text(
    redis_db: redis.Redis, redis_url: str, tiny_model: Path, tmp_path: Path, workers: list
) -> None:
    env = worker_env(redis_url, tiny_model, TIQU_ENGINE="echo", TIQU_BATCH_SIZE="8")
    workers.append(start_worker("echo", env, tmp_path / "w.log"))
    texts = _texts(300)
    client = Client(redis_db)
    sent = client.submit_many([(f"id-{i}", t) for i, t in enumerate(texts)])
    got = dict(client.collect([s.task_id for s in sent], timeout_s=120, interval_s=0.02))
    assert sorted(got) == list(range(len(texts)))
    for i, text in enumerate(texts):
        assert got[i]["id"] == f"id-{i}"
        assert got[i]["status"] == "ok"
        assert got[i]["result"] == {"name": None, "address": None, "email": None,
                                    "question": text}
        assert got[i]["grounded"] == {"question": True}


@pytest.mark.parametrize("mode", ["schema", "copy"])
def test_tiny_model_batch_with_one_invalid_item(
    redis_db: redis.Redis, redis_url: str, tiny_model: Path, tmp_path: Path, workers: list,
    mode: str,
) -> None:
    settings = Settings(base_model=str(tiny_model), device="cpu", dtype="float32",
                        decoding=mode)  # type: ignore[arg-type]
    engine = Engine(settings)
    texts = _texts(7)
    try:
        alone = [engine.extract_batch([t])[0] for t in texts]
    except ImportError as err:
        pytest.skip(f"{mode} decoding is not available here: {err}")
    # flush_interval_s outlasts the collect timeout: only a full batch of 8 can run.
    env = worker_env(redis_url, tiny_model, TIQU_BATCH_SIZE="8", TIQU_FLUSH_INTERVAL_S="120",
                     TIQU_DTYPE="float32", TIQU_DECODING=mode)
    workers.append(start_worker("tiny", env, tmp_path / "w.log"))
    payloads: list[tuple[str | None, object]] = [(f"id-{i}", t) for i, t in enumerate(texts)]
    payloads.insert(3, ("bad", 12345))
    client = Client(redis_db)
    sent = client.submit_many(payloads)  # type: ignore[arg-type]
    got = dict(client.collect([s.task_id for s in sent], timeout_s=100))
    assert got[3]["status"] == "error" and got[3]["error"]["code"] == "invalid_text_type"
    assert got[3]["id"] == "bad"
    answers = [got[i] for i in range(8) if i != 3]
    for i, (text, env, out) in enumerate(zip(texts, answers, alone, strict=True)):
        assert env["id"] == f"id-{i}"
        assert env["status"] == "ok", env
        assert out.complaint is not None
        assert env["result"] == out.complaint.model_dump()  # batched == unbatched
        assert env["grounded"] == {k: v in text for k, v in env["result"].items()
                                   if v is not None}


@pytest.mark.parametrize("kind", ["bpe", "sp"])
def test_prefilled_cache_gives_the_same_answers_as_plain_padding(
    tmp_path: Path, kind: str
) -> None:
    """The shared-prefix, length-grouped prefill (inference.prefill) changes no token."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tests.tiny import build_model

    folder = build_model(tmp_path / kind, kind, seed=0)
    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(folder),
                          LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")  # random LoRA weights: K/V projections change
    texts = _texts(9) + ["短"]
    for adapter in (None, str(tmp_path / "adapter")):
        engine = Engine(Settings(base_model=str(folder), device="cpu", dtype="float32",
                                 adapter=adapter, scheduler="static"))
        for mode in ("copy", "schema"):
            engine.reuse_prefix = False
            plain = engine.extract_batch(texts, mode=mode)
            engine.reuse_prefix = True
            prefilled = engine.extract_batch(texts, mode=mode)
            assert engine._prefiller and engine._prefiller._prefix is not None  # path taken
            assert [(o.complaint, o.new_tokens) for o in prefilled] == [
                (o.complaint, o.new_tokens) for o in plain]


def test_grouped_key_value_attention_on_cpu_changes_no_logit(
        tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """inference.models.use_gqa_attention: the padded batch's logits stay the same, and
    the switch really reaches PyTorch's attention."""
    import torch
    import torch.nn.functional as F

    from inference.models import load_base

    monkeypatch.delenv("TRANSFORMERS_SDPA_FORCE_GQA", raising=False)
    model, tok, _ = load_base(Settings(base_model=str(tiny_model), dtype="float32"))
    assert model.config.num_attention_heads > model.config.num_key_value_heads
    enc = tok(["短", "王五，广州市天河区体育西路1号，快递丢件"], padding=True, return_tensors="pt")
    seen: list[bool] = []
    sdpa = F.scaled_dot_product_attention

    def spy(*args: object, **kw: object) -> torch.Tensor:
        seen.append(bool(kw.get("enable_gqa", False)))
        return sdpa(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    with torch.no_grad():
        got = model(**enc).logits
        monkeypatch.delenv("TRANSFORMERS_SDPA_FORCE_GQA")
        want = model(**enc).logits
    n = model.config.num_hidden_layers
    assert seen == [True] * n + [False] * n
    keep = enc["attention_mask"].bool()
    assert torch.allclose(got[keep], want[keep], atol=1e-5)


class _Pipe:
    def __init__(self, qos: Any) -> None:
        self.qos = qos

    def zrem(self, *_: Any) -> _Pipe:
        return self

    def hdel(self, _key: str, tag: str) -> _Pipe:
        self.qos.removing.append(tag)
        return self

    def execute(self) -> None:
        if self.qos.refuse:
            self.qos.removing.clear()
            raise redis.exceptions.OutOfMemoryError("command not allowed")
        self.qos.removed.extend(self.qos.removing)
        self.qos.removing.clear()


def _held(n: int, refuse: bool) -> tuple[Any, list[Any]]:
    """A kombu virtual QoS holding ``n`` delivered messages, with a Redis-like index."""
    from contextlib import contextmanager
    from types import SimpleNamespace

    from kombu.transport import virtual

    class QoS(virtual.QoS):
        def __init__(self) -> None:
            super().__init__(SimpleNamespace(do_restore=False), prefetch_count=n)
            self.removing: list[str] = []
            self.removed: list[str] = []
            self.refuse = refuse

        @contextmanager
        def pipe_or_acquire(self, pipe: Any = None, client: Any = None) -> Any:
            yield _Pipe(self)

        def _remove_from_indices(self, tag: str, pipe: Any = None) -> Any:
            return pipe.zrem("unacked_index", tag).hdel("unacked", tag)

    qos = QoS()
    requests = []
    for i in range(n):
        message = SimpleNamespace(delivery_tag=f"t{i}", channel=SimpleNamespace(qos=qos),
                                  _state="RECEIVED")
        qos.append(message, message.delivery_tag)
        requests.append(SimpleNamespace(message=message, acknowledged=False))
    return qos, requests


def test_a_refused_ack_pipeline_frees_every_prefetch_slot_and_is_retried() -> None:
    from workers.batching import Owed, acknowledge_all

    qos, requests = _held(4, refuse=True)
    assert not qos.can_consume()  # the prefetch limit is reached
    owed = Owed()
    owed.acks.extend(acknowledge_all(requests))
    assert qos.can_consume() and qos.can_consume_max_estimate() == 4  # every slot free
    assert all(r.acknowledged for r in requests) and qos.removed == []
    assert [tag for _, tag in owed.acks] == ["t0", "t1", "t2", "t3"]
    owed.settle()  # Redis still refuses: kept
    assert len(owed.acks) == 4 and qos.removed == []
    qos.refuse = False
    owed.settle()
    assert owed.acks == [] and qos.removed == ["t0", "t1", "t2", "t3"]


def test_a_refused_put_back_frees_the_slot_and_puts_the_message_back_later() -> None:
    from workers.batching import Owed

    qos, requests = _held(3, refuse=False)
    restored: list[str] = []

    def reject(message: Any, requeue: bool) -> None:
        assert requeue
        if qos.refuse:
            raise redis.exceptions.ReadOnlyError("You can't write against a read only replica.")
        restored.append(message.delivery_tag)
        message._state = "REJECTED"
        qos.ack(message.delivery_tag)

    for r in requests:
        r.message.acknowledged = False
        r.message.reject = lambda requeue, m=r.message: reject(m, requeue)
    qos.refuse = True
    owed = Owed()
    owed.put_back([r.message for r in requests])
    assert qos.can_consume_max_estimate() == 3 and restored == []  # slots free, nothing lost
    assert len(owed.messages) == 3
    qos.refuse = False
    owed.settle()
    assert restored == ["t0", "t1", "t2"] and owed.messages == []
