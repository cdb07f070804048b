"""``latent.trim_pad``: a message carries only the slots its text fills. The receiver's prompt holds
exactly those soft tokens (markers kept around them), the facts count them (positions, wire slots,
payload bytes), the shuffled control sends the donor's, no gradient reaches the unread pad slots in
pretraining or QA training, the quantized wire's bytes and the PQ fit follow them, and the option is
refused where nothing can be trimmed."""

import pytest
import torch

from latentwire.config import ConfigError, from_dict
from latentwire.encoders.pooled import n_groups
from latentwire.latent.build import build_interlingua
from latentwire.latent.interlingua import LatentArgs
from latentwire.latent.prompts import donor_map, latent_prompt_maker, trim_soft
from latentwire.latent.wire import Wire, WireArgs, wire_bytes
from latentwire.prompt import PromptArgs, build_prompt, content_text
from latentwire.scaffold_cache import scaffold_cache_off

CTX = PromptArgs(replaces="context", content_template="{context}", user_template="{content}\nQ: {question}")
VIEWS = [  # three lengths: one group, a few, more than the cap
    {"question": "Who?", "context": "Hi"},
    {"question": "Where?", "context": "Paris is the capital and largest city of France."},
    {"question": "What?", "context": " ".join(["The quick brown fox jumps over the lazy dog."] * 8)},
]
CAP = 6
TASKS = ["reconstruction"] * len(VIEWS)


def _latent(markers: bool = False, **kw) -> LatentArgs:
    cfg = {
        "n_shared": CAP,
        "n_private": 0,
        "trim_pad": True,
        "encoder": {
            "name": "pooled-lm",
            "source_model": "?",
            "d_z": 32,
            "drop_last": 0,
            "train_layers": 1,
            "pool_factor": 4,
        },  # fmt: skip
        "adapter": {"kind": "linear2", "hidden": 32, "markers": markers},
        **kw,
    }
    return from_dict(LatentArgs, cfg, where="latent")


def _il(lm, **kw):
    args = _latent(**kw)
    args.encoder.source_model = lm.spec.name
    torch.manual_seed(0)
    return build_interlingua(args, [lm], torch.device("cpu")).eval()


def _texts(views):
    return [content_text(v, CTX) for v in views]


def _lengths(lm, il, views) -> list[int]:
    _, mask = il.encoder.tokenize(_texts(views))
    return mask.sum(1).tolist()


@pytest.mark.parametrize("markers", [False, True])
@torch.no_grad()
def test_prompt_holds_only_the_filled_slots_and_the_facts_count_them(tiny_lm, markers):
    il = _il(tiny_lm, markers=markers)
    filled = il.filled(_texts(VIEWS))
    assert filled == [n_groups(L, CAP, 4, "factor") for L in _lengths(tiny_lm, il, VIEWS)]
    assert filled[0] < filled[1] < filled[2] == CAP  # the test covers short, middle and capped texts
    with scaffold_cache_off():
        made = latent_prompt_maker(tiny_lm, il, CTX)(VIEWS)
    z = il.encode(_texts(VIEWS))  # (B, CAP, d_z)
    m = int(markers)
    for i, (v, n) in enumerate(zip(VIEWS, filled)):
        p = build_prompt(v, tiny_lm.tokenizer, CTX, tiny_lm.uses_chat_template, "latent")
        got = made.embeds[i][len(p.prefix) : made.embeds[i].shape[0] - len(p.suffix)]
        # as if only the n filled slots had existed: the RMS calibration reads no unsent slot
        want = il.adapter(tiny_lm.spec.name)(z[i : i + 1, :n])[0]  # (n (+2), d)
        assert got.shape[0] == n + 2 * m and torch.allclose(got, want, atol=1e-6)
        if n < CAP:  # the untrimmed reading scales the same slots otherwise
            assert not torch.allclose(il.soft_tokens(z, tiny_lm.spec.name)[i, m : m + n], want[m : m + n])
        f = made.facts[i]
        assert f["content_positions"] == n + 2 * m and f["wire_slots"] == n
        assert f["payload_bytes"] == n * 32 * 2  # fp16
        assert f["prompt_tokens"] == len(p.prefix) + n + 2 * m + len(p.suffix)


@torch.no_grad()
def test_shuffled_control_sends_the_donors_slots(tiny_lm):
    il = _il(tiny_lm)
    donors = donor_map(VIEWS)
    with scaffold_cache_off():
        made = latent_prompt_maker(tiny_lm, il, CTX, "shuffled", donors=donors)(VIEWS)
    filled = il.filled(_texts(VIEWS))
    assert [f["wire_slots"] for f in made.facts] == filled[1:] + filled[:1]  # the next example's


def test_trim_pad_is_refused_where_nothing_can_be_trimmed(tiny_lm):
    with pytest.raises(ConfigError, match="trim_pad"):
        _latent(n_private=2).validate()
    with pytest.raises(ConfigError, match="trim_pad"):
        _latent(deep_prefix={"enabled": True}).validate()
    args = _latent(encoder={"name": "byte", "d_z": 32, "n_heads": 2, "n_layers": 1})
    with pytest.raises(ConfigError, match="fills every slot"):
        build_interlingua(args, [tiny_lm], torch.device("cpu"))


def test_trim_soft_keeps_markers_around_the_kept_rows():
    soft = torch.arange(2 * 6, dtype=torch.float32).view(2, 6, 1)  # (B, S + 2, 1)
    out = trim_soft(soft, [1, 3], markers=True)
    assert [o.flatten().tolist() for o in out] == [[0, 1, 5], [6, 7, 8, 9, 11]]
    assert [o.shape[0] for o in trim_soft(soft, None, markers=False)] == [6, 6]


def test_pretraining_and_qa_losses_read_no_pad_slot(tiny_lm):
    """The Z gradient of every slot past a text's filled ones is exactly zero (not read), and
    nonzero on the filled ones; without trim_pad the pad slots are read."""
    from latentwire.training.args import LatentRunArgs
    from latentwire.training.pretrain import PretrainArgs, receiver_loss
    from latentwire.training.step import _step_loss

    texts = _texts(VIEWS)
    batch = [{**v, "answers": ["Paris"], "id": str(i)} for i, v in enumerate(VIEWS)]
    for trim in (True, False):
        il = _il(tiny_lm, trim_pad=trim).train()
        run = LatentRunArgs(latent=il.args, prompt=CTX)
        filled = il.filled(texts) if trim else [CAP] * len(texts)
        losses = (  # the pretraining loss, then the QA step's
            lambda z, il=il: receiver_loss(tiny_lm, il, z, texts, TASKS, PretrainArgs(), il.filled(texts))[0],
            lambda z, il=il, run=run: _step_loss(tiny_lm, il, run, batch, z)[0],
        )
        for loss_of in losses:
            z = il.encode(texts).detach().requires_grad_(True)  # (B, CAP, d_z)
            loss_of(z).backward()
            norms = z.grad.norm(dim=-1)  # (B, CAP)
            for i, n in enumerate(filled):
                assert bool((norms[i, :n] > 0).all())
                assert bool((norms[i, n:] == 0).all()) if trim else bool((norms[i] > 0).all())


def test_wire_bytes_and_the_pq_fit_follow_the_filled_slots(monkeypatch):
    args = from_dict(WireArgs, {"formats": ["int8", "pq"], "pq_subvectors": 4, "pq_bits": 2}, where="w")
    wire = Wire(args, 16)
    assert (
        wire.facts("int8", [2, 4])["payload_bytes"]
        == (wire_bytes("int8", 2, 16, args) + wire_bytes("int8", 4, 16, args)) / 2
    )
    assert wire.facts("int8", [3, 3])["payload_bytes"] == wire_bytes("int8", 3, 16, args) == 3 * 16 + 6
    seen = []
    monkeypatch.setattr(
        "latentwire.latent.wire.ProductQuantizer.fit", lambda self, x, *a, **k: seen.append(x) or self
    )

    def encode(texts):  # slot j of a text of length L: value j, padding (j >= L) 99
        return torch.stack(
            [torch.tensor([[float(j if j < len(t) else 99)] * 16 for j in range(4)]) for t in texts]
        )

    wire.fit(encode, ["ab", "abc", "a"], batch_size=2, filled=lambda ts: [len(t) for t in ts])
    assert seen[0].shape == (6, 16) and 99 not in seen[0]  # 2 + 3 + 1 filled slots, no pad row
