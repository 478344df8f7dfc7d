"""Named steps where a test can kill the worker: the kill-point matrix of docs/reliability.md.

``TIQU_FAULT_POINT=<step>`` makes the worker SIGKILL itself the first time it
reaches ``point(<step>)``, so a test can prove that a death at exactly that
step loses nothing and answers nothing twice. ``TIQU_FAULT_POINT=engine``
makes every generation fail instead (a sticky engine fault), and
``TIQU_FAULT_POINT=poison`` every generation of a batch holding a text with
the word ``POISON`` (a text that breaks the engine); ``TIQU_FAULT_POINT=slow_pass``
makes every forward pass of the model take 30 ms more (a slow device, so that a
test can watch the rows of one batch finish at different times). Unset, each
point is one comparison. The steps:

- ``after_fetch``: messages moved onto the in-flight list, not yet recorded;
- ``after_record``: recorded as unacknowledged, not yet delivered;
- ``mid_batch``: inside the engine call of a batch;
- ``in_join``: tasks that arrived during a batch fetched and buffered, about to
  join its running set (workers.batching);
- ``after_store``: results stored, not yet acknowledged;
- ``in_ack``: inside the acknowledgement pipeline, before it is sent;
- ``in_restore``: while putting back a dead worker's messages;
- ``in_swap``: while an adapter swap is under way.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

log = logging.getLogger("tiqu.faults")

STEPS = frozenset({"after_fetch", "after_record", "mid_batch", "in_join", "after_store",
                   "in_ack", "in_restore", "in_swap"})
ENGINE = "engine"
POISON = "poison"
SLOW_PASS = "slow_pass"
SLOW_PASS_S = 0.03

_target: str | None = None


def arm(point: str | None) -> None:
    """Set the step to die at (from ``Settings.fault_point``); ``None`` disarms."""
    global _target
    if point is not None and point not in STEPS | {ENGINE, POISON, SLOW_PASS}:
        raise ValueError(f"unknown fault point {point!r}; "
                         f"one of {sorted(STEPS | {ENGINE, POISON, SLOW_PASS})}")
    _target = point
    if point is not None:
        log.warning("fault point armed: %s (testing only)", point)


def point(step: str) -> None:
    """SIGKILL this process if ``step`` is the armed fault point."""
    if _target is not None and step == _target:
        log.warning("fault point %s reached: SIGKILL", step)
        os.kill(os.getpid(), signal.SIGKILL)


def engine_fails(texts: list[str]) -> bool:
    """Whether the armed fault makes the engine fail on ``texts``."""
    return _target == ENGINE or (_target == POISON and any("POISON" in t for t in texts))


def slow_model(model: Any) -> None:
    """When ``slow_pass`` is armed, make each forward pass of ``model`` sleep first."""
    if _target != SLOW_PASS:
        return
    import time

    real = model.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        time.sleep(SLOW_PASS_S)
        return real(*args, **kwargs)

    model.forward = forward
