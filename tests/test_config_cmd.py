"""Operator configuration: ``tiqu config``, ``TIQU_CELERY_CONFIG``, Redis Sentinel
URLs and Flower's own auth variables."""

from __future__ import annotations

import argparse
import json
import os
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest

from core.errors import ConfigError
from core.queue import make_celery
from core.redis import client_from_url
from core.settings import Settings
from tiqu.cli import main as tiqu_main
from tiqu.flower import flower_command

PASSWORD = "pa:ss@w/rd-42"


def _run_config(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                env: dict[str, str], *argv: str) -> str:
    for key in [k for k in os.environ if k.startswith("TIQU_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert tiqu_main(["config", *argv]) == 0
    return capsys.readouterr().out


def test_config_prints_every_setting_with_secrets_masked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"TIQU_REDIS_URL": f"redis://ops:{PASSWORD}@redis.example:6380/2",
           "TIQU_RESULT_URL": f"rediss://:{PASSWORD}@r2:6379/0",
           "TIQU_FLOWER_BASIC_AUTH": f"ops:{PASSWORD}",
           "TIQU_ADAPTER_SIGNING_KEY": PASSWORD, "TIQU_BATCH_SIZE": "7"}
    out = _run_config(monkeypatch, capsys, env)
    assert PASSWORD not in out and "pa:ss" not in out
    lines = dict(line.split("=", 1) for line in out.splitlines())
    assert set(lines) == {f"TIQU_{f.upper()}" for f in Settings.model_fields}
    assert lines["TIQU_REDIS_URL"] == "redis://ops:***@redis.example:6380/2"
    assert lines["TIQU_RESULT_URL"] == "rediss://:***@r2:6379/0"
    assert lines["TIQU_FLOWER_BASIC_AUTH"] == "***"
    assert lines["TIQU_ADAPTER_SIGNING_KEY"] == "***"
    assert lines["TIQU_BATCH_SIZE"] == "7" and lines["TIQU_REDIS_TLS_VERIFY"] == "true"
    assert lines["TIQU_ADAPTER"] == ""  # unset

    shown = json.loads(_run_config(monkeypatch, capsys, env, "--json"))
    assert shown["TIQU_BATCH_SIZE"] == 7 and shown["TIQU_ADAPTER"] is None
    assert shown["TIQU_FLOWER_BASIC_AUTH"] == "***"
    assert PASSWORD not in json.dumps(shown)


def test_config_masks_every_sentinel_entry(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sentinel://:{PASSWORD}@s1:26379/0;sentinel://:{PASSWORD}@s2:26379/0"
    out = _run_config(monkeypatch, capsys, {"TIQU_REDIS_URL": url,
                                             "TIQU_SENTINEL_MASTER": "mymaster"})
    assert PASSWORD not in out
    assert "TIQU_REDIS_URL=sentinel://:***@s1:26379/0;sentinel://:***@s2:26379/0" in out


# --- Redis Sentinel ------------------------------------------------------------------

SENTINELS = "sentinel://10.0.0.1:26379;sentinel://10.0.0.2:26379;sentinel://10.0.0.3:26379"


def test_sentinel_urls_need_a_master_name() -> None:
    with pytest.raises(ConfigError, match="set sentinel_master"):
        Settings(redis_url=SENTINELS)
    with pytest.raises(ConfigError, match="redis://, rediss:// or sentinel://"):
        Settings(redis_url="http://10.0.0.1:26379")
    assert Settings(redis_url=SENTINELS, sentinel_master="mymaster").redis_url == SENTINELS


def test_sentinel_broker_and_backend_get_the_master_name() -> None:
    app = make_celery(Settings(redis_url=SENTINELS, sentinel_master="mymaster"))
    assert app.conf.broker_transport_options["master_name"] == "mymaster"
    assert app.conf.result_backend_transport_options["master_name"] == "mymaster"
    # tiqu's own transport options stay (redelivery, one priority level).
    assert app.conf.broker_transport_options["priority_steps"] == [0]
    with app.connection_for_write() as conn:
        assert conn.transport_cls == "sentinel"
        assert len(conn.alt) == 3 and "10.0.0.1" in conn.alt[0]
    assert type(app.backend).__name__ == "SentinelBackend"
    # A plain Redis URL gets no master name.
    plain = make_celery(Settings(redis_url="redis://127.0.0.1:6379/0",
                                 sentinel_master="mymaster"))
    assert "master_name" not in plain.conf.broker_transport_options


def test_sentinel_result_url_with_a_plain_broker() -> None:
    app = make_celery(Settings(redis_url="redis://127.0.0.1:6379/0", result_url=SENTINELS,
                               sentinel_master="m"))
    assert app.conf.result_backend_transport_options["master_name"] == "m"
    assert "master_name" not in app.conf.broker_transport_options


def test_tiqu_redis_clients_follow_the_sentinels() -> None:
    """Producer, status and metrics clients resolve the master through the sentinels
    (no server needed: nothing connects until a command)."""
    escaped = PASSWORD.replace(":", "%3A").replace("@", "%40").replace("/", "%2F")
    url = f"sentinel://:{escaped}@10.0.0.1:26379/3;sentinel://10.0.0.2:26380"
    settings = Settings(redis_url=url, sentinel_master="mymaster")
    client = client_from_url(settings.redis_url, settings, socket_timeout=2)
    pool = client.connection_pool
    assert pool.service_name == "mymaster"
    assert [(c.connection_pool.connection_kwargs["host"],
             c.connection_pool.connection_kwargs["port"])
            for c in pool.sentinel_manager.sentinels] == [("10.0.0.1", 26379),
                                                          ("10.0.0.2", 26380)]
    assert pool.connection_kwargs["db"] == 3 and pool.connection_kwargs["password"] == PASSWORD


# --- TIQU_CELERY_CONFIG ----------------------------------------------------------------


@pytest.fixture()
def override_module() -> Iterator[str]:
    name = "tiqu_test_celery_override"
    mod = types.ModuleType(name)
    mod.worker_max_memory_per_child = 2_000_000  # type: ignore[attr-defined]
    mod.broker_pool_limit = 3  # type: ignore[attr-defined]
    mod.task_acks_late = False  # type: ignore[attr-defined]  # overrides tiqu's own
    mod.json = json  # type: ignore[attr-defined]  # a module: not a setting
    sys.modules[name] = mod
    yield name
    del sys.modules[name]


def test_celery_config_module_is_applied_last(override_module: str) -> None:
    app = make_celery(Settings(celery_config=override_module))
    assert app.conf.worker_max_memory_per_child == 2_000_000
    assert app.conf.broker_pool_limit == 3
    assert app.conf.task_acks_late is False
    assert app.conf.task_default_queue == "extract"  # untouched settings stay tiqu's
    assert make_celery(Settings()).conf.task_acks_late is True


def test_celery_config_errors_stop_the_app(override_module: str) -> None:
    with pytest.raises(ConfigError, match="cannot be imported"):
        make_celery(Settings(celery_config="no_such_module_for_tiqu"))
    sys.modules[override_module].BROKER_URL = "redis://x"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="not a lower-case Celery setting"):
        make_celery(Settings(celery_config=override_module))


# --- Flower: its own auth variables ----------------------------------------------------

OAUTH = {"FLOWER_AUTH": r".*@example\.com", "FLOWER_AUTH_PROVIDER":
         "flower.views.auth.GithubLoginHandler", "FLOWER_OAUTH2_KEY": "key",
         "FLOWER_OAUTH2_SECRET": "oauth-secret", "FLOWER_OAUTH2_REDIRECT_URI":
         "https://flower.example.com/login"}


def _args(**kw: Any) -> argparse.Namespace:
    base = {"port": 5555, "address": "0.0.0.0", "basic_auth": None, "url_prefix": None}
    return argparse.Namespace(**{**base, **kw})


def test_flower_honours_flower_basic_auth() -> None:
    argv, env = flower_command(_args(), Settings(), {"FLOWER_BASIC_AUTH": f"ops:{PASSWORD}"})
    assert env["FLOWER_BASIC_AUTH"] == f"ops:{PASSWORD}"
    assert not any(PASSWORD in a for a in argv)
    with pytest.raises(ConfigError, match="must be user:password"):
        flower_command(_args(), Settings(), {"FLOWER_BASIC_AUTH": "nopassword"})
    # tiqu's own setting wins over Flower's variable.
    _, env = flower_command(_args(), Settings(flower_basic_auth="a:b"),
                            {"FLOWER_BASIC_AUTH": "c:d"})
    assert env["FLOWER_BASIC_AUTH"] == "a:b"


def test_flower_oauth_counts_as_auth_only_when_complete() -> None:
    argv, env = flower_command(_args(), Settings(), dict(OAUTH))
    assert {k: env[k] for k in OAUTH} == OAUTH and "FLOWER_BASIC_AUTH" not in env
    assert not any("oauth-secret" in a for a in argv)
    for missing in OAUTH:
        partial = {k: v for k, v in OAUTH.items() if k != missing}
        with pytest.raises(ConfigError, match=f"{missing} not set"):
            flower_command(_args(), Settings(), partial)
    with pytest.raises(ConfigError, match="not a regular expression"):
        flower_command(_args(), Settings(), {**OAUTH, "FLOWER_AUTH": "(unclosed"})
    # Without any auth a public address is still refused.
    with pytest.raises(ConfigError, match="basic auth is not set"):
        flower_command(_args(), Settings(), {})


def test_tiqu_flower_refuses_public_address_without_auth_via_env(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key in ("TIQU_FLOWER_BASIC_AUTH", "FLOWER_BASIC_AUTH", *OAUTH):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("FLOWER_AUTH", ".*")  # half an OAuth setup is no auth
    assert tiqu_main(["flower", "--address", "0.0.0.0"]) == 2
    assert "Flower OAuth is incomplete" in capsys.readouterr().err
