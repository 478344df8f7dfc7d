"""The Celery (protocol 2) message that the Redis transport stores, built by hand.

This is the wire format any language can produce: a JSON object LPUSHed onto
the Redis list named after the queue. Workers decode it with Celery as usual.
Task arguments are redacted in ``argsrepr``/``kwargsrepr`` so complaint texts
never show up in monitors or logs.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from typing import Any

_ORIGIN = f"tiqu-producer@{socket.gethostname()}:{os.getpid()}"


def task_message(
    task_name: str, kwargs: dict[str, Any], queue: str, task_id: str | None = None
) -> tuple[str, str]:
    """Return ``(task_id, message_json)`` for one task sent to ``queue``."""
    task_id = task_id or str(uuid.uuid4())
    body = json.dumps(
        [[], kwargs, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}],
        ensure_ascii=False,
    ).encode("utf-8")
    redacted = {k: (f"<{len(v)} chars>" if isinstance(v, str) and k == "text" else v)
                for k, v in kwargs.items()}
    headers = {
        "lang": "py",
        "task": task_name,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": "()",
        "kwargsrepr": repr(redacted),
        "origin": _ORIGIN,
        "ignore_result": False,
    }
    message = {
        "body": base64.b64encode(body).decode("ascii"),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            "correlation_id": task_id,
            "reply_to": None,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return task_id, json.dumps(message, ensure_ascii=False)
