"""Model loading and constrained generation, shared by workers and the trainer.

Layering: ``core`` (light) <- ``inference`` (torch, transformers, peft) <-
``workers`` and ``trainer``. Producers never import this package.
"""
