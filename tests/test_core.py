"""Unit tests: settings, schema, prompting, payload validation and output parsing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import ConfigError, InvalidInput, InvalidModelOutput
from core.names import EXTRACT_TASK, TRAIN_TASK
from core.prompting import PROMPT_VERSION, render_prompt, render_training
from core.queue import celery_config, make_celery, train_reprs
from core.redis import mask_url
from core.schema import FIELDS, Complaint, Envelope, answer_json, complaint_json_schema
from core.settings import Settings
from core.validation import grounding, parse_complaint, validate_payload
from producer.client import Client
from tests.tiny import build_tokenizer


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIQU_BATCH_SIZE", "32")
    monkeypatch.setenv("TIQU_BASE_MODEL", "Qwen/Qwen3-0.6B")
    s = Settings()
    assert s.batch_size == 32 and s.base_model == "Qwen/Qwen3-0.6B"
    assert s.backend_url == s.redis_url


def test_settings_report_every_problem_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        Settings(batch_size=0, flush_interval_s=0, redis_url="http://x")
    message = str(info.value)
    assert "batch_size" in message and "flush_interval_s" in message and "redis_url" in message


def test_celery_config_is_json_only_with_late_acks() -> None:
    conf = celery_config(Settings(result_ttl_s=123, visibility_timeout_s=77))
    assert conf["accept_content"] == ["json"] and conf["task_serializer"] == "json"
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["result_expires"] == 123
    assert conf["broker_transport_options"]["visibility_timeout"] == 77
    assert conf["task_routes"][EXTRACT_TASK]["queue"] == "extract"
    assert conf["task_routes"][TRAIN_TASK]["queue"] == "train"


def test_tls_url_sets_ssl_options() -> None:
    app = make_celery(Settings(redis_url="rediss://:pw@127.0.0.1:6380/0", redis_tls_verify=False))
    assert app.conf.broker_use_ssl["ssl_cert_reqs"] == 0
    assert app.conf.redis_backend_use_ssl == app.conf.broker_use_ssl


def test_each_connection_gets_tls_from_its_own_url() -> None:
    plain, tls = "redis://:pw@10.0.0.1:6379/0", "rediss://:pw@10.0.0.2:6380/1"
    conf = celery_config(Settings(redis_url=plain, result_url=tls, redis_tls_ca="/ca.pem"))
    assert "broker_use_ssl" not in conf
    assert conf["redis_backend_use_ssl"] == {"ssl_cert_reqs": 2, "ssl_ca_certs": "/ca.pem"}
    conf = celery_config(Settings(redis_url=tls, result_url=plain))
    assert conf["broker_use_ssl"]["ssl_cert_reqs"] == 2
    assert "redis_backend_use_ssl" not in conf
    client = Client.from_settings(Settings(redis_url=plain, result_url=tls))
    assert client.broker.connection_pool.connection_class.__name__ == "Connection"
    assert client.backend.connection_pool.connection_class.__name__ == "SSLConnection"


@pytest.mark.parametrize(("url", "masked"), [
    ("redis://:p%40ss@r:6380/0", "redis://:***@r:6380/0"),
    ("rediss://:pa@ss/w:rd@r:6380/0", "rediss://:***@r:6380/0"),
    ("redis://user:pw@r/1", "redis://user:***@r/1"),
    ("redis://onlyname@r/1", "redis://***@r/1"),
    ("unix:///run/redis.sock?db=2&password=sekret", "unix:///run/redis.sock?db=2&password=***"),
    ("redis://r/0?password=a@b&db=1", "redis://r/0?password=***&db=1"),
    ("redis://r:6379/0", "redis://r:6379/0"),
])
def test_mask_url_hides_every_password(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_redis_failures_print_the_url_with_its_password_masked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tiqu.cli import main

    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "a", "text": "x"}\n')
    url = "redis://:s3cr@t/pw@127.0.0.1:1/9"  # nothing listens on port 1
    assert main(["--redis-url", url, "enqueue", str(source)]) == 1
    err = capsys.readouterr().err
    assert "redis://:***@127.0.0.1:1/9" in err and "ConnectionError" in err
    assert "s3cr" not in err and "pw@" not in err
    assert main(["--redis-url", "http://:s3cr@t@127.0.0.1/0", "status"]) == 1
    err = capsys.readouterr().err
    assert "redis_url must be" in err and "s3cr" not in err


def test_train_reprs_show_row_counts_not_rows() -> None:
    request = {"records": [{"text": "张三 断网"}] * 3, "config": {"r": 4}, "extra": "张三"}
    args, kwargs = train_reprs([request], {"payload": request})
    assert "'<3 rows redacted>'" in args and "'r': 4" in args
    assert "张三" not in args + kwargs and "'<3 rows redacted>'" in kwargs


def test_schema_and_answer_format() -> None:
    schema = complaint_json_schema()
    assert list(schema["properties"]) == list(FIELDS)
    text = answer_json({"name": "张三", "email": None, "address": "北京", "question": "断网"})
    assert text == '{"name": "张三", "address": "北京", "email": null, "question": "断网"}'
    env = Envelope.failure("a", "empty_text", "text is empty")
    assert env.model_dump()["error"] == {"code": "empty_text", "message": "text is empty"}


@pytest.mark.parametrize("kind", ["bpe", "sp"])
def test_training_prompt_is_inference_prompt_plus_answer(kind: str) -> None:
    tok = build_tokenizer(kind)
    text = "张三 北京 a@b.com 断网"
    answer = answer_json({"name": "张三"})
    prompt, completion = render_training(tok, text, answer)
    assert prompt == render_prompt(tok, text)  # byte-identical up to the answer
    assert completion == answer + tok.eos_token
    assert PROMPT_VERSION


def test_qwen3_style_template_gets_thinking_disabled() -> None:
    tok = build_tokenizer("bpe")
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n"
        "{% if enable_thinking is defined and enable_thinking is false %}"
        "<think>\n\n</think>\n\n{% endif %}{% endif %}"
    )
    assert render_prompt(tok, "x").endswith("<think>\n\n</think>\n\n")


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"text": ""}, "empty_text"),
        ({"text": "  \n\t"}, "empty_text"),
        ({"text": "x" * 9}, "text_too_long"),
        ({"text": 5}, "invalid_text_type"),
        ({"id": "a"}, "missing_text"),
        ({"text": b"\xff\xfe"}, "invalid_encoding"),
        ("just a string", "invalid_payload"),
    ],
)
def test_bad_payloads_get_stable_codes(payload: object, code: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_payload(payload, max_text_chars=8)
    assert info.value.code == code


def test_payload_extra_fields_are_ignored() -> None:
    assert validate_payload({"text": "hi", "id": 7, "lang": "zh"}, 100) == ("7", "hi")
    assert validate_payload({"text": "hé".encode()}, 100) == (None, "hé")


@pytest.mark.parametrize(
    "raw",
    [
        '{"name": "张三", "address": null, "email": "a@b.com", "question": "断网"}',
        '```json\n{"name": "张三", "email": "a@b.com", "question": "断网"}\n```',
        'Sure! {"name": "张三", "address": null, "email": "a@b.com", "question": "断网"} bye',
    ],
)
def test_parse_complaint_accepts_fences_and_missing_keys(raw: str) -> None:
    c = parse_complaint(raw)
    assert c.name == "张三" and c.address is None and c.question == "断网"


@pytest.mark.parametrize("raw", ["", "no json", '{"name": 5}', "[1, 2]", '{"name": "a"'])
def test_parse_complaint_rejects_with_length_only(raw: str) -> None:
    with pytest.raises(InvalidModelOutput) as info:
        parse_complaint(raw)
    assert info.value.raw_len == len(raw)
    assert raw not in str(info.value) or raw == ""


def test_grounding_marks_values_found_in_text() -> None:
    c = Complaint(name="张三", address="火星", email=None, question="断网")
    assert grounding(c, "张三说断网了") == {"name": True, "address": False, "question": True}


def test_producer_imports_no_torch() -> None:
    code = "import sys, producer, producer.cli; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", "import json; " + code],
                         capture_output=True, text=True, check=True)
    mods = set(json.loads(out.stdout))
    assert not {"torch", "transformers", "peft", "celery"} & mods


def test_qwen3_training_render_matches_inference_prompt() -> None:
    from tests.tiny import QWEN3_CHAT

    tok = build_tokenizer("bpe")
    tok.chat_template = QWEN3_CHAT
    prompt, completion = render_training(tok, "张三 断网", '{"name": "张三"}')
    assert prompt == render_prompt(tok, "张三 断网")
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert completion == '{"name": "张三"}<|im_end|>'
