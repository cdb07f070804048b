"""Discrete comparators: which of the receiver's own content tokens a hard compressor keeps at M positions.

A latent of M slots is only evidence for a continuous code if it beats the best *discrete* choice of M
content tokens fed as ordinary text (../docs/science.md). Every comparator here returns the indices of
the content tokens it keeps, in their original order, in the receiver's own tokenization; the baseline
prompt maker (:mod:`latentwire.evaluation.baselines`) puts those ids between the prompt contract's prefix and
suffix, so scaffold, decoding and scoring are the text baseline's.

Kinds (the ``{baseline}`` names, M the number of content positions kept):

- ``tail-M``: the last M content tokens (the head budget ``budget-M`` keeps the first M).
- ``lexical-M``: the ``select`` encoder's untrained lexical window: the head (the question's tokens,
  at most M // 2), then a window at the densest question-word overlap. Where the prompt shows the
  question outside the content (``prompt.replaces: context``) there is no head: all M positions are
  the window, placed by its overlap with that question.
- ``selfinfo-M``: training-free self-information pruning with the receiver itself (Selective-Context
  style): the M content tokens of highest surprisal given the prompt before them, in order.
- ``oracle-M``: the head, then a window placed at the gold answer's first token. It READS THE GOLD
  ANSWER: an upper bound of window selection, never a system.
- ``select-text-M``: the tokens a trained ``select`` checkpoint keeps (``latentwire select-windows``),
  as text: the same ids for the encoder's own source model, re-tokenized (and cut to M) for any other.

Shapes: T content tokens of one example, V vocabulary size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from latentwire.encoders.select import (
    answer_char_start,
    head_length,
    kept_window,
    overlap_density,
    overlap_indicator,
)
from latentwire.registry import Registry

#: settings the window comparators share with the ``select`` encoder's defaults (EncoderArgs)
HEAD_MARKER, LEXICAL_WINDOW, LEAD = "\n", 24, 0.25


def content_offsets(tok, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Ids and character offsets of ``text`` tokenized as the prompt contract does (no specials).

    The ids are exactly :func:`latentwire.prompt.build_prompt`'s content ids (same call)."""
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def packed_id_bytes(n_ids: int, vocab_size: int) -> int:
    """Bytes of ``n_ids`` token ids packed at ⌈log2 V⌉ bits each (the wire size of a discrete prompt)."""
    return math.ceil(n_ids * math.ceil(math.log2(max(vocab_size, 2))) / 8)


def keep_tail(n_tokens: int, M: int) -> list[int]:
    """The last M of ``n_tokens`` content tokens."""
    return list(range(max(0, n_tokens - M), n_tokens))


def keep_lexical(text: str, offsets: list[tuple[int, int]], M: int, question: str | None = None) -> list[int]:
    """Head + the window at the densest question-word overlap (``select``'s lexical prior alone).

    ``question``: the question where it is not part of ``text`` (``prompt.replaces: context``); the
    content then has no head and the window's overlap is counted against this question."""
    if len(offsets) <= M:
        return list(range(len(offsets)))
    if question is not None:  # score "question \n content" and keep the content's own offsets
        shift = len(question) + len(HEAD_MARKER)
        text, cut, n_head = question + HEAD_MARKER + text, len(question), 0
        offsets = [(s + shift, e + shift) for s, e in offsets]
    else:
        n_head = head_length(text, offsets, HEAD_MARKER, M)
        cut = text.find(HEAD_MARKER)
    ind = torch.tensor([overlap_indicator(text, offsets, n_head, cut)])  # (1, T)
    dens = overlap_density(ind, LEXICAL_WINDOW)[0]  # (T,)
    dens[:n_head] = -1.0  # the window starts after the head
    return kept_window(n_head, len(offsets), int(dens.argmax()), M, LEAD)


def keep_oracle(text: str, offsets: list[tuple[int, int]], answers: list[str], M: int) -> list[int]:
    """Head + a window around the gold answer's first token (the first M tokens if it is not found).
    UPPER BOUND: reads the gold answers."""
    n_head = head_length(text, offsets, HEAD_MARKER, M)
    cut = text.find(HEAD_MARKER)
    c = answer_char_start(text, answers, max(cut, 0))
    start = next((j for j, (s, e) in enumerate(offsets) if s <= c < e), n_head) if c >= 0 else n_head
    return kept_window(n_head, len(offsets), start, M, LEAD)


def keep_selfinfo(surprisal: list[float], M: int) -> list[int]:
    """Indices of the M highest-surprisal tokens, in original order (ties: the earlier token)."""
    order = sorted(range(len(surprisal)), key=lambda j: (-surprisal[j], j))
    return sorted(order[:M])


@torch.no_grad()
def content_surprisal(model: torch.nn.Module, prefix: list[int], content: list[int]) -> list[float]:
    """−log p(content_j | prefix, content_<j) under ``model`` for every content token (nats), from one
    forward over prefix + content. Returns a list of length T."""
    if not content:
        return []
    dev = model.get_input_embeddings().weight.device
    ids = torch.tensor([prefix + content], device=dev)  # (1, P + T)
    logits = model(input_ids=ids).logits[0, len(prefix) - 1 : -1].float()  # (T, V): predicts content
    logp = torch.log_softmax(logits, -1)
    return (-logp.gather(1, torch.tensor(content, device=dev)[:, None])[:, 0]).tolist()


def select_text_ids(record: Mapping, tok, M: int, same_tokenizer: bool) -> list[int]:
    """Receiver content ids of one ``select-windows`` record (see module docstring).

    ``same_tokenizer``: the receiver is the encoder's source model, so its ids are the kept ids
    themselves. Otherwise the head text and the window text are re-tokenized and the window is cut so
    that at most M receiver positions remain."""
    if same_tokenizer:
        return list(record["ids"])[:M]
    text, spans, n_head = record["text"], record["spans"], record["n_head"]
    if not spans:
        return []
    head = text[: spans[n_head - 1][1]] if n_head else ""
    if n_head == len(spans):
        return _encode(tok, head)[:M]
    start = spans[n_head][0]
    while start > 0 and text[start - 1] == " ":  # keep the space a word starts with
        start -= 1
    head_ids = _encode(tok, head)[:M]
    window_ids = _encode(tok, text[start : spans[-1][1]])
    return head_ids + window_ids[: M - len(head_ids)]


def _encode(tok, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"]) if text else []


@dataclass
class Content:
    """One example's content span as a comparator sees it (in the receiver's tokens)."""

    text: str  # the content text (question + context), what a latent replaces
    ids: list[int]  # (T,) its ids, exactly the text prompt's content ids
    offsets: list[tuple[int, int]]  # (T,) character span of each id in ``text``
    prefix: list[int]  # the prompt contract's prefix ids (what selfinfo conditions on)
    question: str | None = None  # the question when the prompt shows it outside ``text`` (replaces: context)
    answers: list[str] | None = None  # gold answers: handed over for ``oracle`` only
    window: Mapping | None = None  # the ``select-windows`` record: for ``select-text`` only


#: comparator kind -> (content, M, loaded receiver) -> kept content ids, in order
COMPARATORS: Registry[Callable[[Content, int, object], list[int]]] = Registry("comparator")


def _pick(c: Content, idx: list[int]) -> list[int]:
    return [c.ids[j] for j in idx]


COMPARATORS.register("tail")(lambda c, M, lm: _pick(c, keep_tail(len(c.ids), M)))
COMPARATORS.register("lexical")(lambda c, M, lm: _pick(c, keep_lexical(c.text, c.offsets, M, c.question)))
COMPARATORS.register("selfinfo")(
    lambda c, M, lm: _pick(c, keep_selfinfo(content_surprisal(lm.model, c.prefix, c.ids), M))
)
COMPARATORS.register("oracle")(lambda c, M, lm: _pick(c, keep_oracle(c.text, c.offsets, c.answers, M)))
COMPARATORS.register("select-text")(
    lambda c, M, lm: select_text_ids(c.window, lm.tokenizer, M, c.window["source_model"] == lm.spec.name)
)

#: comparators that read the gold answer: upper bounds, labelled as such, never systems
UPPER_BOUNDS = frozenset({"oracle"})
