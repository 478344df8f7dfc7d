"""Tiny, randomly initialised chat models built locally for tests.

Two tokenizer families, so code paths are exercised on both:
- ``bpe``: byte-level BPE (GPT-2 / SmolLM2 / Qwen style);
- ``sp``: a sentencepiece-style Unigram tokenizer with Metaspace and byte fallback.
"""

from __future__ import annotations

from pathlib import Path

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# The parts of Qwen3's template that matter here: the last assistant turn is
# rendered with an (empty) think block, and the generation prompt gets one
# when enable_thinking is false.
QWEN3_CHAT = (
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' and loop.last %}"
    "{{- '<|im_start|>assistant\n<think>\n\n</think>\n\n' + message.content + '<|im_end|>\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\n\n</think>\n\n' }}{%- endif %}{%- endif %}"
)

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

CORPUS = [
    "张三 北京市朝阳区建国路88号 zhangsan@example.com 宽带断网三天了，客服电话一直打不通。",
    "姓名：李四，地址：上海市浦东新区世纪大道100号，邮箱：lisi@test.cn。小区停电没人管！",
    "王五，广州市天河区体育西路1号，wangwu@mail.com，快递丢件，要求赔偿。",
    '{"name": "张三", "address": "北京市", "email": "a@b.com", "question": null}',
    "Extract name, address, email and question from the complaint. Answer with JSON.",
    "The package never arrived and support did not reply. 😡 订单号 123456 电话 13800138000",
    "物业费年年涨，电梯坏了一个月没人修，楼道灯也不亮。噪音扰民，供暖不热，水费异常。",
]


def _bpe_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    return tok


def _sp_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS + ["<unk>"], unk_token="<unk>"
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    return tok


def build_tokenizer(kind: str = "bpe", vocab_size: int = 600):
    from transformers import PreTrainedTokenizerFast

    raw = _bpe_tokenizer(vocab_size) if kind == "bpe" else _sp_tokenizer(vocab_size)
    extra = {"unk_token": "<unk>"} if kind == "sp" else {}
    tok = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token="<|im_start|>",
        **extra,
    )
    tok.chat_template = CHATML
    return tok


def build_model(out: Path, kind: str = "bpe", seed: int = 0, layers: int = 2,
                arch: str = "llama") -> Path:
    """Write a tiny random chat model (2 layers, hidden 64) to ``out``.

    ``arch="qwen3"`` builds a Qwen3ForCausalLM with Qwen3's thinking template.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    tok = build_tokenizer(kind)
    if arch == "qwen3":
        tok.chat_template = QWEN3_CHAT
    torch.manual_seed(seed)
    config_cls, model_cls = (Qwen3Config, Qwen3ForCausalLM) if arch == "qwen3" else (
        LlamaConfig, LlamaForCausalLM)
    config = config_cls(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        tie_word_embeddings=True,
    )
    model = model_cls(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
