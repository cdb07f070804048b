"""Random-weight receivers in published shapes, plus a tokenizer and QA examples made to measure.

Throughput depends on shapes, not weight values, so the benchmark (:mod:`latentwire.bench`) needs
no checkpoint: ``hero`` shapes copy the published configs of Llama-3.1-8B and Qwen2.5-7B (8.03e9
and 7.62e9 parameters, untied heads, grouped-query attention, the real vocabularies), ``default``
ones the embedded default's exports (SmolLM2-135M-Instruct, Qwen2.5-Coder-0.5B-Instruct: what the
pretraining bench times), ``tiny`` ones the 2-layer test models of :mod:`latentwire.models.tiny`.
Models are created directly on the target device in the target dtype (no CPU copy of 16 GB),
frozen like registry models.

The tokenizer is the tiny ChatML BPE, trained here on the prompt contract's own text and a fixed
word list, so the scaffold and the synthetic contexts tokenize about one token per word, as a real
tokenizer would (the untrained tiny BPE needs 2-3 tokens per word and would inflate the scaffold).
Its ids are far below either hero vocabulary, which is all the prompt contract needs.
"""

from __future__ import annotations

import random
from typing import Literal

import torch

from latentwire.config import from_dict
from latentwire.models.loading import LoadedModel
from latentwire.models.spec import ModelSpec
from latentwire.models.tiny import build_tiny_tokenizer, tiny_config
from latentwire.prompt import PromptArgs, answer_ids, build_prompt, eos_id

Family = Literal["llama", "qwen2"]
Shapes = Literal["hero", "default", "tiny"]

#: family -> (receiver name, config kwargs) of the published base models (config.json of
#: meta-llama/Llama-3.1-8B and Qwen/Qwen2.5-7B); ``tests/test_bench.py`` pins their parameter counts.
HERO: dict[str, tuple[str, dict]] = {
    "llama": (
        "llama-3.1-8b",
        dict(
            vocab_size=128256,
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            max_position_embeddings=131072,
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
            bos_token_id=128000,
            eos_token_id=128001,
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192,
            },
        ),
    ),
    "qwen2": (
        "qwen2.5-7b",
        dict(
            vocab_size=152064,
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            max_position_embeddings=131072,
            rms_norm_eps=1e-6,
            tie_word_embeddings=False,
            use_sliding_window=False,
            sliding_window=131072,
            max_window_layers=28,
            bos_token_id=151643,
            eos_token_id=151643,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        ),
    ),
}

#: family -> (receiver name, config kwargs) of the embedded default's receivers, as their float32
#: exports' config.json (resources/models/*/hf) read: the registry names, so an encoder's
#: ``source_model`` finds them. The Qwen export's head is untied (GGUF keeps a separate output matrix).
DEFAULT: dict[str, tuple[str, dict]] = {
    "llama": (
        "smollm2-135m",
        dict(
            vocab_size=49152,
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            head_dim=64,
            max_position_embeddings=8192,
            rms_norm_eps=1e-5,
            tie_word_embeddings=True,
            bos_token_id=1,
            eos_token_id=2,
            rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
        ),
    ),
    "qwen2": (
        "qwen2.5-coder-0.5b",
        dict(
            vocab_size=151936,
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            max_position_embeddings=32768,
            rms_norm_eps=1e-6,
            tie_word_embeddings=False,
            use_sliding_window=False,
            max_window_layers=28,
            bos_token_id=151643,
            eos_token_id=151645,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        ),
    ),
}
PUBLISHED = {"hero": HERO, "default": DEFAULT}

# Common English words: the synthetic contexts, questions and answers are drawn from these, and the
# tokenizer learns each as one token.
WORDS = (
    "the of and to in was for on that with as by at from his her which were are this be their first "
    "city also new one two after year team time school state world war century river north south "
    "east west church music album film game season league club party government company island "
    "army king queen family house court museum station bridge market village province road tower "
    "library garden theatre stadium harbour valley mountain forest lake coast border empire treaty "
    "battle victory record song band player coach captain bishop emperor council parliament "
    "university college student teacher language history science trade union festival award prize "
    "number series title version system network energy water light power land sea air fire stone "
    "gold silver iron copper wood paper glass cotton wool grain wheat rice coffee tea sugar salt"
).split()


def receiver_config(family: Family, shapes: Shapes, vocab_size: int):
    """(receiver name, transformers config) for ``family`` in ``shapes``.

    ``vocab_size`` (the tokenizer's) sizes the tiny models; hero and default models keep the
    published vocabulary, which must cover the tokenizer's ids.
    """
    from transformers import LlamaConfig, Qwen2Config

    if shapes == "tiny":
        return f"tiny-{family}", tiny_config(family, vocab_size)
    name, kwargs = PUBLISHED[shapes][family]
    if vocab_size > kwargs["vocab_size"]:
        raise ValueError(f"tokenizer has {vocab_size} ids, {name} only {kwargs['vocab_size']}")
    return name, {"llama": LlamaConfig, "qwen2": Qwen2Config}[family](**kwargs)


def build_random_receiver(
    family: Family,
    shapes: Shapes,
    tokenizer,
    device: torch.device,
    dtype: torch.dtype,
    attn: str = "sdpa",
    nf4: bool = False,
    seed: int = 0,
) -> LoadedModel:
    """A frozen random-weight receiver built on ``device`` in ``dtype``, as a :class:`LoadedModel`.

    ``nf4`` swaps the decoder's linear layers for bitsandbytes NF4 ones (CUDA only; embeddings and
    the LM head stay in ``dtype``, as ``load_in_4bit`` leaves them).
    """
    from transformers import AutoModelForCausalLM

    name, config = receiver_config(family, shapes, len(tokenizer))
    torch.manual_seed(seed)
    with torch.device(device):  # parameters are allocated (and initialised) on the device itself
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn)
    if nf4:
        quantize_nf4_(model, dtype)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    entry = {
        "name": name,
        "family": family,
        "source": {"kind": "local", "path": f"synthetic:{shapes}"},
        "dtype": str(dtype).removeprefix("torch."),
        "quantization": "nf4" if nf4 else "none",
        "context_limit": config.max_position_embeddings,
    }
    spec = from_dict(ModelSpec, entry, where=f"bench.{name}")
    return LoadedModel(spec=spec, model=model, tokenizer=tokenizer, device=device, dtype=dtype)


def quantize_nf4_(model: torch.nn.Module, compute_dtype: torch.dtype) -> None:
    """Replace every ``nn.Linear`` of the decoder layers by a bitsandbytes NF4 ``Linear4bit``, in place.

    The weights already sit on the GPU; ``Params4bit.to(device)`` quantizes them there, one layer at a
    time, so peak memory stays near the bf16 model's.
    """
    if next(model.parameters()).device.type != "cuda":
        raise ValueError("nf4: 4-bit NF4 weights need CUDA")
    try:
        import bitsandbytes as bnb
    except ImportError as e:
        raise ValueError("nf4: bitsandbytes is not installed (pip install bitsandbytes)") from e
    for layer in model.model.layers:
        for parent in list(layer.modules()):
            for child_name, child in list(parent.named_children()):
                if type(child) is not torch.nn.Linear:
                    continue
                q = bnb.nn.Linear4bit(
                    child.in_features,
                    child.out_features,
                    bias=child.bias is not None,
                    compute_dtype=compute_dtype,
                    quant_type="nf4",
                    device="meta",
                )
                w = child.weight.data
                q.weight = bnb.nn.Params4bit(w, requires_grad=False, quant_type="nf4").to(w.device)
                if child.bias is not None:
                    q.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
                setattr(parent, child_name, q)


def build_bench_tokenizer(prompt_args: PromptArgs):
    """The tiny ChatML tokenizer, trained so the scaffold and :data:`WORDS` are ~one token per word."""
    texts = [prompt_args.system_prompt, prompt_args.user_template, prompt_args.content_template]
    texts += [prompt_args.answer_prefix, "\n\n", " ".join(WORDS)]
    return build_tiny_tokenizer(texts * 20, vocab_size=4096)


def synthetic_examples(
    tok,
    prompt_args: PromptArgs,
    chat: bool,
    n: int,
    text_tokens: int,
    answer_tokens: int,
    seed: int = 0,
    answer_spread: int = 0,
) -> list[dict]:
    """``n`` examples (id, question, context, answers) whose TEXT prompt has at most ``text_tokens``
    tokens (as many as fit) and whose gold answer has ``answer_tokens`` ids (end-of-answer included),
    or, with ``answer_spread`` s > 0, a length drawn uniformly from A - s .. A (padded batches).

    The answer is a span of the context (its first sentence), so the examples are well-formed QA.
    """
    eos = eos_id(tok)
    rng = random.Random(seed)
    out = []
    for i in range(n):
        n_ids = answer_tokens - (rng.randint(0, answer_spread) if answer_spread else 0)
        words = rng.choices(WORDS, k=max(n_ids - 1, 1))
        while len(words) > 1 and len(answer_ids(" ".join(words), tok, prompt_args, chat, eos)) > n_ids:
            words.pop()  # a word that splits into several tokens: shorten the answer instead
        answer = " ".join(words)
        question = f"what is the {rng.choice(WORDS)} of the {rng.choice(WORDS)}?"
        filler = [rng.choice(WORDS) + ("." if j % 12 == 11 else "") for j in range(2 * text_tokens)]
        out.append(_fit(tok, prompt_args, chat, text_tokens, f"synthetic-{i}", question, answer, filler))
    return out


def _example(uid: str, question: str, answer: str, filler: list[str]) -> dict:
    """A QA example whose context opens with the answer as its own sentence."""
    context = f"{answer}. " + " ".join(filler)
    return {"id": uid, "question": question, "context": context, "answers": [answer]}


def _fit(
    tok,
    prompt_args: PromptArgs,
    chat: bool,
    text_tokens: int,
    uid: str,
    question: str,
    answer: str,
    filler: list[str],
) -> dict:
    """The example with the most filler words whose text prompt fits in ``text_tokens`` (binary search)."""

    def length(k: int) -> int:
        return len(build_prompt(_example(uid, question, answer, filler[:k]), tok, prompt_args, chat).ids)

    if length(0) > text_tokens:
        raise ValueError(f"text_tokens={text_tokens} is shorter than the scaffold + question + answer")
    lo, hi = 0, len(filler)  # the largest k with length(k) <= text_tokens (length grows with k)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if length(mid) <= text_tokens else (lo, mid - 1)
    return _example(uid, question, answer, filler[:lo])
