"""The shared-vocabulary least-squares map (pure function) on hand-made tables."""

import pytest
import torch

from latentwire.heads.vocab_align import shared_vocab_map


class Vocab:
    def __init__(self, tokens: list[str]) -> None:
        self.vocab = {t: i for i, t in enumerate(tokens)}

    def get_vocab(self) -> dict[str, int]:
        return self.vocab


def test_recovers_a_linear_map_from_the_shared_strings_only():
    g = torch.Generator().manual_seed(0)
    shared = [f"w{i}" for i in range(40)]
    src_tok = Vocab(shared + ["only_src_a", "only_src_b"])
    dst_tok = Vocab(["only_dst"] + shared[::-1])  # other ids, other order
    src = torch.randn(42, 8, generator=g)
    true_w = torch.randn(8, 5, generator=g)
    dst = torch.randn(41, 5, generator=g)
    for t in shared:  # receiver rows of shared strings are the mapped source rows
        dst[dst_tok.vocab[t]] = src[src_tok.vocab[t]] @ true_w
    dst[0] = 1e3  # a receiver-only row must not enter the fit
    w, n = shared_vocab_map(src_tok, src, dst_tok, dst, ridge=1e-9)
    assert n == 40 and w.shape == (8, 5)
    torch.testing.assert_close(w, true_w, atol=1e-3, rtol=1e-3)


def test_ridge_shrinks_towards_zero_and_too_few_shared_strings_fail():
    g = torch.Generator().manual_seed(1)
    tok = Vocab([f"t{i}" for i in range(30)])
    src, dst = torch.randn(30, 6, generator=g), torch.randn(30, 4, generator=g)
    small, _ = shared_vocab_map(tok, src, tok, dst, ridge=1e-6)
    big, _ = shared_vocab_map(tok, src, tok, dst, ridge=10.0)
    assert big.norm() < 0.5 * small.norm()
    with pytest.raises(ValueError, match="share 1 token"):
        shared_vocab_map(Vocab(["a", "b"]), src[:2], Vocab(["a", "c"]), dst[:2])
