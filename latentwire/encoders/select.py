"""``select``: a question-aware extractive compressor that keeps one latent slot per kept token.

Notation: B batch, T source-model tokens (valid first, then padding), d source-model width,
W slots (= the encoder's ``wire_slots``: every slot on the wire), H head tokens kept, n_win = W - H
window tokens, d_z latent width.

Why: pooling a ~180-token context into W slots lost the answer span in every pooled encoder
(docs/experiments.md; the earlier attempt saw the same), while per-token representations keep it.
This encoder keeps sequence length but spends it where the answer is:

1. The content text ("Question: …\\nContext: …") is tokenised by the frozen ``source_model``.
2. The head — the tokens before the first ``head_marker`` (the question), at most ``W // 2`` —
   is always kept.
3. A relevance scorer (LayerNorm → MLP) over the frozen layer-``source_layer`` hidden states gives
   one answer-start logit per remaining token. Because the question comes first and the source
   model is causal, every context token's state has read the question. A lexical prior adds
   ``lexical_prior`` (a learned weight, initial value from config) times the share of question
   content words among the ``lexical_window`` tokens around each token (relative to the text's
   densest stretch): on 400 validation questions
   the densest-overlap window alone holds the gold answer start for 57 % of them, against 26 % for
   the first 48 tokens (what the token budget keeps) and 23 % for a random window. A window of n_win
   consecutive tokens starting ``lead`` · n_win tokens before the best-scoring token is kept.
4. Z = projection of the kept tokens' features (``features``: the frozen input embeddings, or the
   hidden states) plus a learned slot embedding: (B, W, d_z). Short texts are padded with a
   learned pad vector.

Training signal: the receivers' losses reach the projection and slot embeddings through Z; the
scorer learns only from its own cross-entropy against the gold answer's first token (found in
the content text), which :meth:`SelectEncoder.forward` computes when it is handed the answers in
training mode. With ``teacher_window`` > 0 a training window is centred on the gold start with
that probability, so the reading heads see answer-bearing windows while the scorer is still
learning. In eval mode, or without answers, nothing gold-derived is read: the window comes from
the scorer alone (tested).
"""

from __future__ import annotations

import re

import torch
from torch import nn

from latentwire.encoders.core import ENCODERS, EncoderArgs, EncoderDefaults, SourceModels
from latentwire.encoders.source import SourceReader, build_trunk, get_source_model, tokenize

# Function words left out of the lexical-overlap prior (English, as the bundled QA data).
STOPWORDS = frozenset(
    "a an and are as at be been but by can could did do does for from had has have he her his how i if in "
    "into is it its may might not of on or she so than that the their them then there these they this "
    "those to was we were what when where which who whom whose why will with would you".split()
)
_WORD = re.compile(r"[A-Za-z0-9]+")


def content_words(text: str) -> set[str]:
    """Lower-cased alphanumeric words of ``text`` longer than one character, stopwords removed."""
    return {w for w in (m.group().lower() for m in _WORD.finditer(text)) if len(w) > 1 and w not in STOPWORDS}


def overlap_indicator(text: str, offsets: list[tuple[int, int]], n_head: int, cut: int) -> list[float]:
    """Per token: 1.0 if it is part of a word after ``cut`` that is a content word of ``text[:cut]``
    (the question), else 0.0; head tokens are 0. Works on characters, so every sub-word piece of a
    matching word counts."""
    q = content_words(text[:cut]) if cut > 0 else set()
    hit = bytearray(len(text) + 1)
    for m in _WORD.finditer(text, max(cut, 0)):
        if m.group().lower() in q:
            hit[m.start() : m.end()] = b"\x01" * (m.end() - m.start())
    return [0.0 if j < n_head else float(any(hit[s:e])) for j, (s, e) in enumerate(offsets)]


def answer_char_start(text: str, answers: list[str], after: int = 0) -> int:
    """Character offset in ``text`` of the first gold answer (in answer order) found at or after
    ``after``, else -1."""
    for a in answers:
        a = a.strip()
        if a:
            i = text.find(a, after)
            if i >= 0:
                return i
    return -1


def head_length(text: str, offsets: list[tuple[int, int]], marker: str, wire_slots: int) -> int:
    """Tokens that end at or before the first ``marker`` (the question), at most ``wire_slots // 2``."""
    cut = text.find(marker) if marker else -1
    if cut < 0:
        return 0
    n = sum(1 for _, end in offsets if end <= cut + len(marker))
    return min(n, wire_slots // 2)


def kept_window(n_head: int, length: int, start_tok: int, wire_slots: int, lead: float) -> list[int]:
    """Token indices kept for one text of ``length`` tokens: its ``n_head`` head tokens, then a window
    of ``wire_slots - n_head`` consecutive tokens starting ``lead`` of the window before ``start_tok``
    (clamped into the text); every token when the text fits in ``wire_slots``."""
    if length <= wire_slots:
        return list(range(length))
    n_win = wire_slots - n_head
    s = start_tok - int(lead * n_win)
    s = max(n_head, min(s, length - n_win))
    return list(range(n_head)) + list(range(s, s + n_win))


def overlap_density(indicator: torch.Tensor, window: int) -> torch.Tensor:
    """Share of question-word tokens among the ``window`` tokens centred on each token, divided by its
    maximum over the text (1 at the densest stretch; all 0 without overlap). (B, T) -> (B, T)."""
    T = indicator.shape[1]
    box = torch.ones(1, 1, window, device=indicator.device) / window
    dens = nn.functional.conv1d(indicator[:, None], box, padding=window // 2)[:, 0, :T]  # (B, T)
    return dens / dens.amax(1, keepdim=True).clamp(min=1e-6)


@ENCODERS.register("select")
class SelectEncoder(EncoderDefaults, nn.Module):
    """Head tokens + a scored window of the rest, one slot per kept token (see module docstring)."""

    reads_answers = True  # training hands it the gold answers for the scorer's loss

    def __init__(self, args: EncoderArgs, wire_slots: int, models: SourceModels | None = None) -> None:
        super().__init__()
        lm = get_source_model(args, models or {})
        if not lm.tokenizer.is_fast:
            raise ValueError(
                f"encoder select: source model {lm.spec.name!r} needs a fast tokenizer (offsets)"
            )
        trunk = build_trunk(lm, args.source_layer, 0)
        self.source = SourceReader(lm, args.max_enc_tokens, trunk)
        self.wire_slots, self.d_z = wire_slots, args.d_z
        self.features, self.lead, self.head_marker = args.select_features, args.select_lead, args.head_marker
        self.teacher_window = args.teacher_window
        d_src = lm.model.get_input_embeddings().weight.shape[1]
        self.scorer = nn.Sequential(
            nn.LayerNorm(d_src),
            nn.Linear(d_src, args.select_hidden),
            nn.GELU(),
            nn.Linear(args.select_hidden, 1),
        )
        # embeddings are well scaled within one model: a plain projection, the identity when d_z == d
        # (Z is then the source model's own embeddings of the kept tokens); hidden states carry
        # outlier dimensions, so they are normalised first
        norm = nn.LayerNorm(d_src) if self.features == "hidden" else nn.Identity()
        self.token_proj = nn.Sequential(norm, nn.Linear(d_src, args.d_z))
        if self.features == "embed" and args.d_z == d_src:
            with torch.no_grad():
                self.token_proj[1].weight.copy_(torch.eye(d_src))
                self.token_proj[1].bias.zero_()
        self.slot_emb = nn.Parameter(torch.zeros(wire_slots, args.d_z))  # (W, d_z): where in the window
        self.pad = nn.Parameter(torch.zeros(args.d_z))  # (d_z,) fills slots of texts shorter than W
        # lexical prior: weight of the question-overlap density in the start logits (learned)
        self.lex_window = args.lexical_window
        if args.lexical_prior:
            self.lex_weight = nn.Parameter(torch.tensor(float(args.lexical_prior)))
        self.aux_loss: torch.Tensor | None = None  # scorer CE of the last training forward
        self.last_stats: dict[str, float] = {}  # scorer diagnostics of the last forward with answers
        self.register_buffer("anchor", torch.zeros(0), persistent=False)

    def _tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, list[list[tuple[int, int]]]]:
        """Ids (B, T), mask (B, T) bool and per-example character offsets of every token."""
        ids, mask, offsets = tokenize(self.source.lm.tokenizer, texts, self.source.max_tokens, offsets=True)
        dev = self.source.device
        return ids.to(dev), mask.to(dev), offsets

    def _head_len(self, text: str, offsets: list[tuple[int, int]]) -> int:
        return head_length(text, offsets, self.head_marker, self.wire_slots)

    def forward(self, texts: list[str], answers: list[list[str]] | None = None) -> torch.Tensor:
        feats, rows, _, _ = self._select(texts, answers)
        return self._gather(feats, rows)  # (B, W, d_z)

    @torch.no_grad()
    def kept_tokens(self, texts: list[str]) -> list[dict]:
        """What the encoder keeps of each text with no gold input (the scorer alone, as at evaluation):
        per text ``{"ids": source-model ids of the kept tokens in order, "spans": their (start, end)
        character offsets in the text, "n_head": how many of them are head tokens}``. This is the
        discrete choice a ``select`` latent encodes (the ``select-text-M`` comparator feeds it as text)."""
        was = self.training
        self.eval()
        try:
            _, rows, ids, offsets = self._select(texts, None)
        finally:
            self.train(was)
        heads = [self._head_len(t, o) for t, o in zip(texts, offsets)]
        return [
            {
                "ids": [int(ids[i, j]) for j in r],
                "spans": [list(offsets[i][j]) for j in r],
                "n_head": min(heads[i], len(r)),
            }
            for i, r in enumerate(rows)
        ]

    def _select(self, texts: list[str], answers: list[list[str]] | None):
        """(features (B, T, d), kept token indices per text, ids (B, T), offsets) of one batch."""
        ids, mask, offsets = self._tokenize(texts)  # (B, T), (B, T)
        with torch.no_grad():
            h = self.source.hidden(ids, mask).float().to(self.anchor.device)  # (B, T, d)
            feats = h if self.features == "hidden" else self.source.embed(ids).float().to(self.anchor.device)
        mask = mask.to(self.anchor.device)
        logits = self.scorer(h).squeeze(-1)  # (B, T)
        B = len(texts)
        heads = [self._head_len(t, o) for t, o in zip(texts, offsets)]
        if hasattr(self, "lex_weight"):
            logits = logits + self.lex_weight * self._overlap_density(texts, offsets, heads, logits.shape[1])
        lengths = mask.sum(1).tolist()
        allowed = mask.clone()
        for i, n in enumerate(heads):
            allowed[i, :n] = False
        if not bool(allowed.any(1).all()):  # a text that is all head: let the scorer pick anywhere
            allowed = allowed | (mask & ~allowed.any(1, keepdim=True))
        logits = logits.masked_fill(~allowed, float("-inf"))
        use_gold = self.training and answers is not None
        gold = [self._gold_token(t, o, a) for t, o, a in zip(texts, offsets, answers)] if use_gold else None
        pred = logits.argmax(1).tolist()  # (B,)
        rows = [self._kept(heads[i], lengths[i], pred[i]) for i in range(B)]
        self.aux_loss = None
        if gold is not None:
            self._scorer_loss(logits, gold, pred, rows)
            for i in range(B):  # teacher windows: centred on the gold start, training only
                if gold[i] >= 0 and torch.rand(()) < self.teacher_window:
                    rows[i] = self._kept(heads[i], lengths[i], gold[i])
        return feats, rows, ids, offsets

    def _overlap_density(self, texts, offsets, heads: list[int], T: int) -> torch.Tensor:
        """Share of question words among the ``lexical_window`` tokens centred on each token, divided
        by its maximum over the text (1 at the densest stretch; all 0 without overlap): (B, T)."""
        ind = torch.zeros(len(texts), T, device=self.anchor.device)
        for i, (t, o, n) in enumerate(zip(texts, offsets, heads)):
            cut = t.find(self.head_marker) if self.head_marker else -1
            ind[i, : len(o)] = torch.tensor(overlap_indicator(t, o, n, cut), device=ind.device)
        return overlap_density(ind, self.lex_window)

    def _gold_token(self, text: str, offsets: list[tuple[int, int]], answers: list[str]) -> int:
        """Index of the token holding the gold answer's first character, or -1 if not found."""
        after = text.find(self.head_marker) if self.head_marker else 0
        c = answer_char_start(text, answers, max(after, 0))
        if c < 0:
            return -1
        return next((j for j, (s, e) in enumerate(offsets) if s <= c < e), -1)

    def _kept(self, n_head: int, length: int, start_tok: int) -> list[int]:
        return kept_window(n_head, length, start_tok, self.wire_slots, self.lead)

    def _gather(self, feats: torch.Tensor, rows: list[list[int]]) -> torch.Tensor:
        """Projected features of the kept tokens, padded to W, plus slot embeddings: (B, W, d_z)."""
        B, W = feats.shape[0], self.wire_slots
        x = self.token_proj(feats)  # (B, T, d_z)
        out = self.pad.expand(B, W, self.d_z).clone()  # (B, W, d_z)
        for i, r in enumerate(rows):
            out[i, : len(r)] = x[i, r]
        return out + self.slot_emb

    def _scorer_loss(self, logits: torch.Tensor, gold: list[int], pred: list[int], rows) -> None:
        """Cross-entropy of the start logits against the gold start token (examples with one);
        ``rows`` are the predicted windows, for the hit rate."""
        keep = [i for i, g in enumerate(gold) if g >= 0 and torch.isfinite(logits[i, g])]
        n = max(len(keep), 1)
        self.last_stats = {
            "found": len(keep) / max(len(gold), 1),  # gold start located in the kept-able tokens
            "start_acc": sum(pred[i] == gold[i] for i in keep) / n,
            "window_hit": sum(gold[i] in rows[i] for i in keep) / n,  # predicted window holds it
        }
        if not keep:
            return
        target = torch.tensor([gold[i] for i in keep], device=logits.device)
        self.aux_loss = nn.functional.cross_entropy(logits[keep], target)
