"""Hidden-state matching: the recorder reads the same states HF returns, and the MSE pairs student
and teacher states by answer index (from the end of the sequence), masking padded answers."""

import pytest
import torch

from latentwire.training.hidden import HiddenRecorder, answer_states, decoder_layers, hidden_mse


def test_recorder_keeps_the_last_forwards_layer_outputs(tiny_lm):
    model = tiny_lm.model
    n = len(decoder_layers(model))
    g = torch.Generator().manual_seed(0)
    first = torch.randn(1, 4, model.config.hidden_size, generator=g)  # (B, T, d)
    last = torch.randn(2, 5, model.config.hidden_size, generator=g)
    rec = HiddenRecorder(model, [0, n - 1])
    with torch.no_grad():
        model(inputs_embeds=first, use_cache=False)
        out = model(inputs_embeds=last, use_cache=False, output_hidden_states=True)
    states = rec.stop()
    assert sorted(states) == [0, n - 1]
    torch.testing.assert_close(states[0], out.hidden_states[1])  # output of decoder layer 0
    assert states[n - 1].shape == (2, 5, model.config.hidden_size)  # the last forward's, not the first's
    with torch.no_grad():  # stop() removed the hooks: later forwards are not recorded
        model(inputs_embeds=first, use_cache=False)
    assert rec.stop()[0] is states[0]
    with pytest.raises(ValueError, match=f"decoder layers 0..{n - 1}"):
        HiddenRecorder(model, [n])


def test_answer_states_are_the_columns_that_predict_the_answer():
    h = torch.arange(7.0).view(1, 7, 1)  # T = 7: prompt columns 0..4, answer A = 2 at columns 5, 6
    assert answer_states(h, 2).flatten().tolist() == [4.0, 5.0]  # column T_p - 1 + j


def test_hidden_mse_aligns_by_answer_index_and_masks_padding():
    """Student prompt 3 columns, teacher prompt 5, same answers (A = 2; row 1 has one real token)."""
    A, d = 2, 2
    s = torch.zeros(2, 3 + A, d)
    t = torch.zeros(2, 5 + A, d)
    s[:, 2:4] = torch.tensor([[1.0, 1.0], [2.0, 2.0]])  # student's answer-predicting columns
    t[:, 4:6] = torch.tensor([[0.0, 1.0], [2.0, 0.0]])  # teacher's
    t[1, 5] = 100.0  # row 1, answer step 1 is padding: must not count
    ids = torch.tensor([[7, 8], [7, -100]])
    # per real (row, step): mean over d of squared differences: row 0: 0.5, 2.0; row 1: 0.5
    want = (0.5 + 2.0 + 0.5) / 3
    assert hidden_mse({3: s}, {3: t}, ids).item() == pytest.approx(want)
    # two layers are averaged; an identical layer contributes 0
    assert hidden_mse({3: s, 4: s}, {3: t, 4: s}, ids).item() == pytest.approx(want / 2)
