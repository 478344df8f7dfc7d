"""The circuit breaker: a sick engine stops taking work instead of answering it with errors.

A batch can fail for a reason that is not its input's: a broken CUDA context,
a device-side assert, a bad adapter, a model that cannot load. Answering such
a batch with error envelopes would drain the whole queue into permanent
errors while the worker looks healthy. So a batch whose engine call raises
(:class:`EngineFailed`) is not answered: its messages go back on the queue
unanswered, and :class:`Breaker` counts it. After ``limit`` failed batches in
a row (``TIQU_BREAKER_FAILURES``, 3 by default) the breaker opens: the
worker stops consuming, puts back everything it holds, turns its health
red and exits with :data:`EXIT_CODE`, so that its supervisor (systemd,
compose, Kubernetes) restarts it. A successful batch closes the count.

A text that breaks a sound engine is told apart by a canary: after a
failed batch the engine runs a text it has always answered, and only when
that fails too is the batch the engine's fault (workers.runtime,
``Runtime._after_failure``). Otherwise each text runs alone, and one that
still fails is answered ``internal_error``. So a sticky fault never answers
anything, however often the worker is restarted, and a poison text is
answered on its first failed batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from core.errors import TiquError

log = logging.getLogger("tiqu.breaker")

#: The worker's exit status after the breaker opened (1 is Celery's own failure).
EXIT_CODE = 3


class EngineFailed(TiquError):
    """The engine failed a whole batch for a reason that is not the input's."""

    code = "internal_error"


@dataclass
class Breaker:
    """Counts failed batches in a row; opens at ``limit`` and stays open.

    ``opened`` is read by the health endpoints and the ``tiqu_breaker_open``
    gauge (workers.metrics).
    """

    limit: int = 3
    failures: int = 0
    opened: bool = False

    def success(self) -> None:
        """A batch was answered: the count starts again."""
        self.failures = 0

    def failure(self) -> bool:
        """A batch failed for a reason not its input's; True when this opens the breaker."""
        self.failures += 1
        if self.opened or self.failures < self.limit:
            return False
        self.opened = True
        log.critical("circuit breaker open: %d batches in a row failed in the engine; "
                     "putting every held message back and exiting with status %d",
                     self.failures, EXIT_CODE)
        return True
