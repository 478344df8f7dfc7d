"""The broker side every tiqu worker process shares, extract and train alike.

- :mod:`core.transport.fetch`: reliable fetch on kombu's Redis transport
  (BRPOPLPUSH onto a per-node in-flight list, batched moves into ``unacked``),
  hostile queue items refused before they are decoded, dead letters.
- :mod:`core.transport.guard`: the consumer bootstep that answers bad messages
  with coded envelopes and keeps the worker serving.
- :mod:`core.transport.liveness`: held sets, the heartbeat, the dead-worker
  sweep and the fence of a worker cut off from Redis.
- :mod:`core.transport.results`: one envelope per task id, written once,
  announced once, Redis refusals retried.
- :mod:`core.transport.faults`: the named kill points of the fault tests.

It lives in core because both worker apps (``workers`` for ``extract``,
``trainer`` for ``train``) install it, and they may not import each other.
"""
