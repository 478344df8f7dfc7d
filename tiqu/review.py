"""``tiqu review``: a web page to review flagged answers and store corrections.

The page lists the task ids on ``tiqu:review``, least confident first, with
each complaint's text (stored by the worker for flagged tasks only, with the
result TTL), each field's span highlighted and its confidence. An operator
accepts the answer as shown (after setting fields from a text selection or to
null), which stores a correction (:mod:`core.corrections`) and drops the task
from the list, or skips it, which drops it without a correction.

Like ``tiqu flower``, it binds 127.0.0.1 unless ``--address`` says otherwise,
and refuses to start (exit code 2) on any other address without basic auth
(``--basic-auth user:pass`` or ``TIQU_REVIEW_BASIC_AUTH``), because the page
shows personal data. Writes take only ``application/json`` bodies, so another
site's form cannot post to it.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import secrets
import sys
from pathlib import Path
from typing import Any

from core import corrections
from core.errors import ConfigError, InvalidInput
from core.names import KEY_PREFIX, REVIEW_AT_KEY, REVIEW_KEY, REVIEW_TEXT_PREFIX, result_key
from core.schema import FIELDS
from core.settings import Settings
from tiqu.flower import check_auth, is_loopback

DEFAULT_ADDRESS = "127.0.0.1"
DEFAULT_PORT = 5556
#: Most flagged complaints one page load lists (the least confident).
LIST_LIMIT = 200
PAGE = Path(__file__).with_name("review_page.html")
#: The task id of the last retrain sent from the page.
RETRAIN_KEY = KEY_PREFIX + "review:retrain"
#: Celery states of a retrain that has not ended.
RUNNING = ("PENDING", "RECEIVED", "STARTED", "PROGRESS", "RETRY")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("review", help="review flagged answers, store corrections")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="HTTP port (default 5556)")
    p.add_argument("--address", default=DEFAULT_ADDRESS,
                   help="bind address (default 127.0.0.1); others need basic auth")
    p.add_argument("--basic-auth", help="user:password[,user2:password2] "
                   "(prefer TIQU_REVIEW_BASIC_AUTH: argv is visible to other users)")
    p.set_defaults(func=run)


def review_auth(args: argparse.Namespace, settings: Settings) -> str | None:
    """The basic-auth credentials to require, or None; raises ConfigError when unsafe."""
    auth = args.basic_auth or (settings.review_basic_auth.get_secret_value()
                               if settings.review_basic_auth else None)
    if auth:
        check_auth(auth)
    elif not is_loopback(args.address):
        raise ConfigError(
            f"review address {args.address!r} is not loopback and basic auth is not set; "
            "pass --basic-auth user:pass or set TIQU_REVIEW_BASIC_AUTH, "
            f"or bind {DEFAULT_ADDRESS}")
    return auth


def run(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from core.redis import client_from_url

    try:
        auth = review_auth(args, settings)
    except ConfigError as err:
        print(f"tiqu review: {err}", file=sys.stderr)
        return 2
    app = make_app(client_from_url(settings.backend_url, settings), settings, auth)
    print(f"tiqu review: http://{args.address}:{args.port} "
          f"({'basic auth' if auth else 'no auth, loopback only'})", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.address, port=args.port, access_log=False, log_level="warning")
    return 0


def _json(raw: Any) -> Any:
    try:
        return json.loads(raw) if raw is not None else None
    except ValueError:
        return None


def list_items(client: Any, limit: int = LIST_LIMIT) -> dict[str, Any]:
    """The least confident flagged tasks still answered, with counts per field and
    per adapter version over them, the total flagged and the corrections' progress."""
    flagged = client.zrange(REVIEW_KEY, 0, limit - 1, withscores=True)
    ids = [t.decode() if isinstance(t, bytes) else str(t) for t, _ in flagged]
    pipe = client.pipeline(transaction=False)
    for task_id in ids:
        pipe.get(result_key(task_id))
        pipe.get(REVIEW_TEXT_PREFIX + task_id)
    found = pipe.execute() if ids else []
    items, by_field, by_adapter = [], dict.fromkeys(FIELDS, 0), {}  # type: ignore[var-annotated]
    for n, (task_id, (_, score)) in enumerate(zip(ids, flagged, strict=True)):
        env = (_json(found[2 * n]) or {}).get("result")
        if not isinstance(env, dict):
            continue  # its result expired; the worker's next flag drops the id
        text = found[2 * n + 1]
        items.append({"task_id": task_id, "score": float(score), "id": env.get("id"),
                      "text": text.decode() if isinstance(text, bytes) else text,
                      **{k: env.get(k) for k in ("result", "spans", "confidence", "review",
                                                 "adapter_version")}})
        for f in env.get("review") or []:
            by_field[f] = by_field.get(f, 0) + 1
        version = env.get("adapter_version") or "none"
        by_adapter[version] = by_adapter.get(version, 0) + 1
    return {"items": items, "progress": corrections.progress(client),
            "counts": {"total": client.zcard(REVIEW_KEY), "fields": by_field,
                       "adapters": by_adapter}}


def drop(client: Any, task_id: str) -> None:
    """Take ``task_id`` off the review list and delete its stored text."""
    pipe = client.pipeline()
    pipe.zrem(REVIEW_KEY, task_id).zrem(REVIEW_AT_KEY, task_id)
    pipe.delete(REVIEW_TEXT_PREFIX + task_id)
    pipe.execute()


class Gone(Exception):
    """The task's text or result is no longer stored (expired, or reviewed already)."""


def accept(client: Any, task_id: str, body: Any, max_text_chars: int) -> str:
    """Store ``body`` (``{gold, spans}``) as the correction of ``task_id``'s text and drop
    the task from the list; returns the stream entry id. Raises :class:`Gone` or
    :class:`InvalidInput` (nothing stored)."""
    text, meta = client.get(REVIEW_TEXT_PREFIX + task_id), client.get(result_key(task_id))
    env = (_json(meta) or {}).get("result")
    if text is None or not isinstance(env, dict):
        raise Gone(task_id)
    if not isinstance(body, dict):
        raise InvalidInput("body must be an object", code="invalid_gold")
    payload = {"id": env.get("id") or task_id, "gold": body.get("gold"),
               "text": text.decode() if isinstance(text, bytes) else text}
    correction = corrections.check(payload, "page", max_text_chars, spans=body.get("spans"),
                                   adapter_version=env.get("adapter_version"))
    entry = corrections.store(client, correction)
    drop(client, task_id)
    return entry


def start_retrain(client: Any, celery: Any) -> str:
    """Send the retrain (trainer.retrain.queued_request) to the train queue unless one
    from this page is still running; returns its task id, remembered in RETRAIN_KEY."""
    from core.names import TRAIN_QUEUE, TRAIN_TASK
    from core.queue import train_reprs
    from trainer.retrain import queued_request

    running = retrain_state(client, celery)
    if running.get("state") in RUNNING:
        raise Busy(running["task_id"])
    request = queued_request()
    argsrepr, kwargsrepr = train_reprs([request], {})
    sent = celery.send_task(TRAIN_TASK, args=[request], queue=TRAIN_QUEUE,
                            argsrepr=argsrepr, kwargsrepr=kwargsrepr)
    client.set(RETRAIN_KEY, sent.id)
    return str(sent.id)


class Busy(Exception):
    """A retrain sent from the page is still running."""


def retrain_state(client: Any, celery: Any) -> dict[str, Any]:
    """The last retrain sent from the page: its state, the PROGRESS meta while it runs,
    and when it ends, the new version, its gate and whether it was promoted."""
    raw = client.get(RETRAIN_KEY)
    if raw is None:
        return {"task_id": None}
    task_id = raw.decode() if isinstance(raw, bytes) else str(raw)
    result = celery.AsyncResult(task_id)
    out: dict[str, Any] = {"task_id": task_id, "state": result.state}
    if result.state == "PROGRESS" and isinstance(result.info, dict):
        out["progress"] = {k: result.info.get(k) for k in ("phase", "step", "total", "loss")}
    elif result.state == "SUCCESS" and isinstance(result.result, dict):
        done = result.result
        out.update(version=done.get("version"), gate=done.get("gate"),
                   promotion=done.get("promotion"))
    elif result.state == "FAILURE":
        out["error"] = f"{type(result.result).__name__}: {result.result}"
    return out


def _authorized(header: str | None, auth: str) -> bool:
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    return any(secrets.compare_digest(given.encode(), entry.encode())
               for entry in auth.split(","))


def make_app(client: Any, settings: Settings, auth: str | None = None,
             celery: Any = None) -> Any:
    """The Starlette app: the page at ``/``, JSON under ``/api``; basic auth when given.
    ``celery`` sends and follows retrains (default: an app on ``settings``)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    def error(status: int, code: str, message: str) -> JSONResponse:
        return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)

    async def page(request: Request) -> Response:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    async def items(request: Request) -> Response:
        return JSONResponse(list_items(client))

    async def act(request: Request) -> Response:
        task_id, action = request.path_params["task_id"], request.path_params["action"]
        if request.headers.get("content-type", "").split(";")[0] != "application/json":
            return error(415, "json_only", "send the body as application/json")
        if action not in ("accept", "skip"):
            return error(404, "no_such_action", f"action {action!r} is not accept or skip")
        body = _json(await request.body())
        if action == "skip":
            drop(client, task_id)
            return JSONResponse({"skipped": task_id, "progress": corrections.progress(client)})
        try:
            entry = accept(client, task_id, body, settings.max_text_chars)
        except Gone:
            drop(client, task_id)
            return error(410, "gone", "the task's text or result is no longer stored")
        except InvalidInput as err:
            return error(422, err.code, str(err))
        return JSONResponse({"entry": entry, "progress": corrections.progress(client)})

    queue: list[Any] = [celery]

    def app_for_tasks() -> Any:
        if queue[0] is None:
            from core.queue import make_celery

            queue[0] = make_celery(settings)
        return queue[0]

    async def retrain(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse(retrain_state(client, app_for_tasks()))
        if request.headers.get("content-type", "").split(";")[0] != "application/json":
            return error(415, "json_only", "send the body as application/json")
        try:
            task_id = start_retrain(client, app_for_tasks())
        except Busy as err:
            return error(409, "retrain_running", f"retrain {err} is still running")
        return JSONResponse({"task_id": task_id, "state": "PENDING"})

    app = Starlette(routes=[
        Route("/", page), Route("/api/items", items),
        Route("/api/items/{task_id}/{action:str}", act, methods=["POST"]),
        Route("/api/retrain", retrain, methods=["GET", "POST"]),
    ])
    if auth is None:
        return app

    async def guarded(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            if not _authorized(header, auth):
                deny = Response("authentication required", status_code=401,
                                headers={"WWW-Authenticate": 'Basic realm="tiqu review"'})
                await deny(scope, receive, send)
                return
        await app(scope, receive, send)

    return guarded
