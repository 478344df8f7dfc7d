"""The structure the rooms rely on: import contracts, configs written once, one scorer.

No model and no Redis: these tests read configs, parsers and the import graph.
"""

from __future__ import annotations

import argparse
import ast
import shutil
import subprocess
import sys
import textwrap
from importlib.util import find_spec
from pathlib import Path

import pytest

from core.errors import ConfigError
from core.validation import same_field
from tests.conftest import ROOT
from trainer import cli
from trainer.config import INTEGRATIONS, TrainConfig
from trainer.synth import FAMILIES, LAYOUTS, SynthConfig, generate, synth_records

# --- import contracts -------------------------------------------------------------


def test_import_contracts_hold() -> None:
    """The .importlinter contracts: rooms layered, producer free of torch, no cycles."""
    pytest.importorskip("importlinter")
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint is not None, "lint-imports is not installed next to this interpreter"
    done = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "0 broken" in done.stdout


def test_synth_is_a_package_of_families() -> None:
    assert not (ROOT / "trainer" / "synth.py").exists()
    assert set(FAMILIES) == {"default", "plain", "extended"}
    assert set(LAYOUTS) == {"email_body", "narrative", "contact_last", "form_table"}


# --- TrainConfig, written once ------------------------------------------------------


def _train_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tiqu")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.add_parser(sub)
    return parser.parse_args(["train", "--data", "x.jsonl", *argv])


def test_cli_options_are_the_config_fields() -> None:
    assert cli.train_config(_train_args()) == TrainConfig()
    parser = argparse.ArgumentParser()
    cli.config_options(parser)
    options = {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings[:1]
               != ["-h"]}
    assert set(options) == set(TrainConfig.model_fields)
    # every flag the command had before the options were derived
    for flag in ("--r", "--alpha", "--dropout", "--lr", "--epochs", "--max-steps",
                 "--max-train-s", "--batch-size", "--grad-accum", "--max-len", "--warmup",
                 "--eval-every", "--eval-loss-rows", "--save-every", "--save-every-s",
                 "--eval-limit", "--eval-batch-size", "--seed", "--layers", "--decoding",
                 "--dtype", "--report-to", "--gradient-checkpointing", "--no-cache-prefix",
                 "--resume", "--keep-checkpoints", "--no-progress"):
        assert flag in options.values(), flag
    config = cli.train_config(_train_args(
        "--r", "4", "--layers", "top2", "--no-progress", "--no-cache-prefix", "--resume",
        "--decoding", "schema", "--report-to", "none"))
    assert config == TrainConfig(r=4, layers=[-2, -1], progress=False, cache_prefix=False,
                                 resume=True, decoding="schema", report_to="none")
    with pytest.raises(SystemExit):
        _train_args("--dtype", "float16")


def test_config_round_trips_and_derives_the_lora_spec() -> None:
    config = TrainConfig(r=4, alpha=8, dropout=0.0, layers=[-1], max_steps=3)
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert config.replace(resume=True).resume and not config.resume
    with pytest.raises(ConfigError, match="r must be >= 1"):
        config.replace(r=0)
    spec = config.lora_spec(["q_proj"], [3])
    assert (spec.r, spec.alpha, spec.dropout, spec.target_modules, spec.layers) == (
        4, 8, 0.0, ["q_proj"], [3])


def test_report_to_takes_what_the_trainer_takes() -> None:
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    assert set(INTEGRATIONS) == set(INTEGRATION_TO_CALLBACK)
    for value in ("none", "all", [], ["none"]):
        assert TrainConfig(report_to=value).report_to == value
    assert TrainConfig().trainer_report_to() == "none"
    with pytest.raises(ConfigError, match="report_to 'nowhere' is not one of"):
        TrainConfig(report_to=["nowhere"])
    missing = next(n for n, mods in INTEGRATIONS.items()
                   if not any(find_spec(m) for m in mods))
    with pytest.raises(ConfigError, match=f"report_to '{missing}' is not installed"):
        TrainConfig(report_to=missing)


# --- SynthConfig ----------------------------------------------------------------------


def test_synth_config_reports_every_problem_at_once() -> None:
    with pytest.raises(ValueError) as err:
        SynthConfig(plain=True, extended=True, rare_names=False, unlabelled=0.5)
    assert "exclude each other" in str(err.value) and "unlabelled must be a share" in str(err.value)
    with pytest.raises(ValueError, match="share"):
        SynthConfig(unlabelled=-0.1)
    config = SynthConfig(seed=3, extended=True, rare_names=True)
    assert generate(20, config) == synth_records(20, 3, extended=True, rare_names=True)


# --- field exact, one meaning ------------------------------------------------------------


def test_field_exact_folds_width_and_whitespace_everywhere() -> None:
    from tiqu.bench_report import field_exact
    from trainer.evaluate import same

    assert same is same_field
    assert same_field("ＡＢ 12", "AB  12") and same_field(None, None)
    assert not same_field("AB", None) and not same_field("AB", "ABC")
    gold = {"name": "张三", "address": None, "email": "a@b.cn", "question": "退款。"}
    wide = {**gold, "email": "ａ@ｂ.cn", "question": " 退款。 "}
    assert field_exact([wide], [gold]) == 1.0


# --- no patching of kombu, Celery or celery-batches -----------------------------------

#: The only modules that may write attributes of kombu, Celery or celery-batches objects:
#: the transport subclasses and the batch task subclass.
_MAY_WRITE_LIBRARY_ATTRIBUTES = {"core/transport/kombu_redis.py", "workers/batching.py"}
_LIBRARIES = ("kombu", "celery", "celery_batches")
#: Celery consumer handlers: overridden in a subclass (core.transport.guard), never set
#: on an instance.
_CONSUMER_HANDLERS = {"on_decode_error", "on_invalid_task", "on_unknown_message",
                      "on_unknown_task", "create_task_handler", "update_strategies"}


def _root_name(node: ast.expr) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def library_attribute_writes(source: str) -> list[tuple[int, str]]:
    """``(line, why)`` for each write that patches an object of kombu, Celery or
    celery-batches (or may): ``X.attr = ...``, ``del X.attr``, ``setattr(X, ...)``.

    Flagged: attributes of names imported from those libraries (``kredis.Channel._x =``,
    ``worker_state.should_stop =``); private attributes of any object but ``self`` or
    ``cls`` (``channel._in_poll =``, ``task._do_flush =``); Celery consumer handlers set on
    an instance (``c.on_decode_error =``); Celery settings written as attributes
    (``app.conf.x =``, where ``app.conf.update`` is the API); ``setattr`` or ``delattr``
    with such a target or with a private or computed attribute name.
    """
    tree = ast.parse(source)
    imported: set[str] = set()
    strings: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update((a.asname or a.name).split(".")[0] for a in node.names
                            if a.name.split(".")[0] in _LIBRARIES)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in _LIBRARIES:
            imported.update(a.asname or a.name for a in node.names)
    for node in tree.body:  # module constants, for setattr(obj, NAME, ...)
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)):
            strings.update({t.id: node.value.value for t in node.targets
                            if isinstance(t, ast.Name)})

    def why(obj: ast.expr, attr: str | None) -> str | None:
        own = isinstance(obj, ast.Name) and obj.id in ("self", "cls")
        if _root_name(obj) in imported:
            return f"an attribute of {_root_name(obj)}, imported from a library"
        if attr is None and not own:
            return "a computed attribute name"
        if attr is not None and attr.startswith("_") and not attr.startswith("__") and not own:
            return f"the private attribute {attr} of another object"
        if attr in _CONSUMER_HANDLERS and not own:
            return f"the Celery consumer handler {attr} on an instance"
        if isinstance(obj, ast.Attribute) and obj.attr == "conf":
            return "a Celery setting written as an attribute (use app.conf.update)"
        return None

    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, (ast.Assign, ast.Delete)):
            targets = list(node.targets)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for target in targets:
            for t in ast.walk(target):
                if isinstance(t, ast.Attribute) and isinstance(t.ctx, (ast.Store, ast.Del)):
                    reason = why(t.value, t.attr)
                    if reason:
                        found.append((node.lineno, reason))
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("setattr", "delattr") and node.args):
            name = node.args[1] if len(node.args) > 1 else None
            attr = (name.value if isinstance(name, ast.Constant) and isinstance(name.value, str)
                    else strings.get(name.id) if isinstance(name, ast.Name) else None)
            reason = why(node.args[0], attr if attr is not None else None)
            if reason:
                found.append((node.lineno, f"{node.func.id}: {reason}"))
    return found


def test_only_the_transport_and_the_batch_task_write_library_attributes() -> None:
    """kombu, Celery and celery-batches are changed by subclassing, never by patching:
    only core/transport/kombu_redis.py and workers/batching.py touch their attributes."""
    patched = textwrap.dedent('''
        from kombu.transport import redis as kredis
        from celery.worker import state as worker_state
        CLIENT_ID = "_tiqu_client_id"
        kredis.Channel._brpop_start = start
        kredis.QoS.append = append
        worker_state.should_stop = 1
        def install(c, task, app, conn, channel, inflight):
            c.on_decode_error = handler
            c.create_task_handler = lambda: handler
            task._do_flush = flush
            task._tref = None
            app.conf.worker_prefetch_multiplier = 1
            channel._tiqu_inflight = inflight
            setattr(conn, CLIENT_ID, 1)
            setattr(kredis.Channel, "_tiqu_patched", True)
            self_made = {}
            self_made["x"] = 1
            app.conf.update(worker_prefetch_multiplier=1)
            inflight.queue = "extract"
    ''')
    assert [line for line, _ in library_attribute_writes(patched)] == [
        5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16]

    found = []
    for room in ("core", "producer", "inference", "workers", "trainer", "tiqu"):
        for path in sorted((ROOT / room).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in _MAY_WRITE_LIBRARY_ATTRIBUTES:
                continue
            found += [f"{rel}:{line}: {reason}"
                      for line, reason in library_attribute_writes(path.read_text())]
    assert found == []


def test_worker_apps_select_tiqus_transport_for_every_broker_url() -> None:
    """redis://, rediss:// and sentinel:// stay the URLs; the class comes from
    broker_transport, also after a sentinel connection fails over (no server needed)."""
    from kombu.transport import redis as kredis

    from core.queue import make_celery
    from core.settings import Settings
    from core.transport import fetch, kombu_redis

    sentinels = "sentinel://10.0.0.1:26379;sentinel://10.0.0.2:26379"
    for url, cls in (("redis://:pw@10.0.0.1:6379/2", kombu_redis.Transport),
                     ("rediss://:pw@10.0.0.1:6380/2", kombu_redis.Transport),
                     (sentinels, kombu_redis.SentinelTransport)):
        settings = Settings(redis_url=url, sentinel_master="m")
        app = make_celery(settings)
        app.conf.update(kombu_redis.broker_settings(url))
        with app.connection_for_write() as conn, \
                make_celery(settings).connection_for_write() as stock:
            assert conn.get_transport_cls() is cls, url
            assert issubclass(cls, stock.get_transport_cls())
            # the URL reads as it does for kombu's own transport
            fields = ("hostname", "port", "userid", "password", "virtual_host", "ssl", "alt",
                      "transport_options")
            assert [getattr(conn, f) for f in fields] == [getattr(stock, f) for f in fields]
            assert conn.hostname == "10.0.0.1" and bool(conn.ssl) == url.startswith("rediss")
            conn.maybe_switch_next()  # what kombu does when connecting fails
            assert conn.get_transport_cls() is cls, url
    assert issubclass(kombu_redis.SentinelTransport.Channel, kredis.SentinelChannel)
    assert issubclass(kombu_redis.SentinelTransport.Channel, kombu_redis.Channel)
    assert fetch.TRANSPORT_ALIASES == {"redis": kombu_redis.TRANSPORT,
                                       "rediss": kombu_redis.TRANSPORT,
                                       "sentinel": kombu_redis.SENTINEL_TRANSPORT}
    with pytest.raises(kombu_redis.UnsupportedKombu, match=r"kombu 5\.7\.x.*kombu 5\.8\.0"):
        kombu_redis.check_kombu_version("5.8.0")
    kombu_redis.check_kombu_version("5.7.3")
