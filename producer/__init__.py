"""tiqu's light producer: push complaint texts to Redis and collect results.

Needs only ``redis``; never imports torch, transformers, peft or celery.
"""

from producer.client import Client, Submitted

__all__ = ["Client", "Submitted"]
