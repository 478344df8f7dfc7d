"""The one prompt builder shared by training and serving.

Training renders ``prompt + completion`` and inference renders ``prompt`` with the
same function, so the two can never drift apart. Adapters record
``PROMPT_VERSION`` in their manifest; workers refuse an adapter trained on
another version.
"""

from __future__ import annotations

from typing import Any, Protocol

PROMPT_VERSION = "1"

SYSTEM_PROMPT = (
    "Extract name, address, email and question from the complaint. "
    "Answer with one JSON object with exactly these keys; copy each value "
    "verbatim from the text, or null if absent."
)


class ChatTokenizer(Protocol):
    eos_token: Any
    chat_template: Any

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...


def build_messages(text: str) -> list[dict[str, str]]:
    """Chat messages for one complaint (system instruction + the raw text)."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": text},
    ]


def _template(tokenizer: ChatTokenizer, messages: list[dict[str, str]], gen: bool) -> str:
    if not getattr(tokenizer, "chat_template", None):
        from core.errors import ConfigError

        raise ConfigError(
            f"tokenizer {type(tokenizer).__name__} has no chat template; "
            "tiqu needs a chat (instruct) model"
        )
    # enable_thinking=False turns off Qwen3's thinking block; other templates
    # ignore the extra variable.
    out = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=gen, enable_thinking=False
    )
    return str(out)


def render_prompt(tokenizer: ChatTokenizer, text: str) -> str:
    """The inference prompt: chat template with the generation prompt appended."""
    return _template(tokenizer, build_messages(text), gen=True)


def render_training(tokenizer: ChatTokenizer, text: str, answer: str) -> tuple[str, str]:
    """``(prompt, completion)`` for supervised fine-tuning.

    ``prompt`` is byte-identical to :func:`render_prompt`. ``completion`` is the
    answer followed by the template's end-of-turn token, which is what the
    loss is computed on; template text after that token is dropped.
    """
    prompt = render_prompt(tokenizer, text)
    messages = build_messages(text) + [{"role": "assistant", "content": answer}]
    full = _template(tokenizer, messages, gen=False)
    eos = str(tokenizer.eos_token or "")
    if full.startswith(prompt) and answer in full[len(prompt):]:
        rest = full[len(prompt):]
        start = rest.index(answer)
        if start == 0:
            end = rest.find(eos, len(answer)) if eos else -1
            completion = rest[: end + len(eos)] if end >= 0 else rest.rstrip() + eos
            return prompt, completion
    return prompt, answer + eos
