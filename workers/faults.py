"""Named steps where a test can kill the worker: the kill-point matrix of docs/reliability.md.

``TIQU_FAULT_POINT=<step>`` makes the worker SIGKILL itself the first time it
reaches ``point(<step>)``, so a test can prove that a death at exactly that
step loses nothing and answers nothing twice. ``TIQU_FAULT_POINT=engine``
makes every generation fail instead (a sticky engine fault). Unset, each
point is one comparison. The steps:

- ``after_fetch``: messages moved onto the in-flight list, not yet recorded;
- ``after_record``: recorded as unacknowledged, not yet delivered;
- ``mid_batch``: inside the engine call of a batch;
- ``after_store``: results stored, not yet acknowledged;
- ``in_ack``: inside the acknowledgement pipeline, before it is sent;
- ``in_restore``: while putting back a dead worker's messages;
- ``in_swap``: while an adapter swap is under way.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger("tiqu.faults")

STEPS = frozenset({"after_fetch", "after_record", "mid_batch", "after_store", "in_ack",
                   "in_restore", "in_swap"})
ENGINE = "engine"

_target: str | None = None


def arm(point: str | None) -> None:
    """Set the step to die at (from ``Settings.fault_point``); ``None`` disarms."""
    global _target
    if point is not None and point not in STEPS and point != ENGINE:
        raise ValueError(f"unknown fault point {point!r}; one of {sorted(STEPS | {ENGINE})}")
    _target = point
    if point is not None:
        log.warning("fault point armed: %s (testing only)", point)


def point(step: str) -> None:
    """SIGKILL this process if ``step`` is the armed fault point."""
    if _target is not None and step == _target:
        log.warning("fault point %s reached: SIGKILL", step)
        os.kill(os.getpid(), signal.SIGKILL)


def engine_fails() -> bool:
    """Whether the armed fault is a sticky engine failure."""
    return _target == ENGINE
