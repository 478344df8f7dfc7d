"""The broker side every tiqu worker process shares, extract and train alike.

- :mod:`core.transport.kombu_redis`: tiqu's kombu transport, subclasses of
  kombu's Redis ``Transport``, ``Channel`` and ``QoS`` (and the sentinel ones)
  that both worker apps select by module path (``broker_transport``): reliable
  fetch (BRPOPLPUSH onto a per-node in-flight list, batched moves into
  ``unacked``) and the garbage filter.
- :mod:`core.transport.fetch`: the policy the transport applies, free of kombu:
  in-flight lists, hostile queue items refused before they are decoded, dead
  letters, the sweep of in-flight lists.
- :mod:`core.transport.guard`: the guarded Celery consumer and its bootstep,
  which answer bad messages with coded envelopes and keep the worker serving.
- :mod:`core.transport.liveness`: held sets, the heartbeat, the dead-worker
  sweep and the fence of a worker cut off from Redis.
- :mod:`core.transport.results`: one envelope per task id, written once,
  announced once, Redis refusals retried.
- :mod:`core.transport.faults`: the named kill points of the fault tests.

It lives in core because both worker apps (``workers`` for ``extract``,
``trainer`` for ``train``) install it, and they may not import each other.
"""
