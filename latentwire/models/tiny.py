"""Tiny random Llama/Qwen2/Gemma-shaped models with a trained BPE tokenizer, built offline in seconds.

Tests and the workflow's ``.test`` run use these in place of real checkpoints: same code paths
(grouped-query attention, chat template, tied or untied embeddings), no downloads. The Gemma one
is the odd architecture out: its embedding layer scales every row by sqrt(hidden_size) (so soft
tokens need ``input_embed_scale``) and its tokenizer has no chat template (the plain prompt path).
"""

from __future__ import annotations

from pathlib import Path

import torch

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_CORPUS = [
    "Question: What is the capital of France? Context: Paris is the capital and largest city of France.",
    "Answer the question with a short phrase copied from the context. Reply with the answer only.",
    "The quick brown fox jumps over the lazy dog. Super Bowl 50 was an American football game.",
    "Denver Broncos defeated the Carolina Panthers 24 to 10 at Levi's Stadium in Santa Clara, California.",
    "system user assistant Answer: the a an of in on at to for with by from 0 1 2 3 4 5 6 7 8 9",
]


def build_tiny_tokenizer(extra_text: list[str] | None = None, vocab_size: int = 600):
    """A byte-level BPE tokenizer with ChatML specials and chat template (PreTrainedTokenizerFast)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(_CORPUS * 4 + list(extra_text or []), trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
    )
    tok.chat_template = CHATML
    return tok


#: families whose tiny tokenizer has no chat template (their prompts use the plain template)
PLAIN_FAMILIES = ("gemma",)


def tiny_config(family: str, vocab_size: int):
    """The 2-layer config (d=64, grouped-query attention) of the tiny ``family`` model."""
    from transformers import GemmaConfig, LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        eos_token_id=2,
        pad_token_id=0,
    )
    configs = {
        "llama": lambda: LlamaConfig(**common, tie_word_embeddings=True),
        "qwen2": lambda: Qwen2Config(**common, tie_word_embeddings=False),
        # head_dim set explicitly (Gemma's default is 256); embeddings scaled by sqrt(64) = 8
        "gemma": lambda: GemmaConfig(**common, head_dim=16, tie_word_embeddings=True),
    }
    if family not in configs:
        raise ValueError(f"tiny model family {family!r}: choose from {sorted(configs)}")
    return configs[family]()


def build_tiny_model(family: str, vocab_size: int, seed: int = 0) -> torch.nn.Module:
    """A 2-layer random causal LM in the given family's shape, with grouped-query attention."""
    from transformers import AutoModelForCausalLM

    config = tiny_config(family, vocab_size)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    return model.eval()


def save_tiny(family: str, out_dir: str | Path, extra_text: list[str] | None = None, seed: int = 0) -> Path:
    """Build and ``save_pretrained`` a tiny model + tokenizer into ``out_dir``."""
    out_dir = Path(out_dir)
    tok = build_tiny_tokenizer(extra_text)
    if family in PLAIN_FAMILIES:
        tok.chat_template = None
    model = build_tiny_model(family, len(tok), seed)
    model.config.eos_token_id = tok.convert_tokens_to_ids("<|im_end|>")
    model.config.pad_token_id = tok.convert_tokens_to_ids("<|endoftext|>")
    model.generation_config.eos_token_id = model.config.eos_token_id
    model.generation_config.pad_token_id = model.config.pad_token_id
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir
