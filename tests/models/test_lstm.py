"""The masked LSTM: padding side does not matter, empty rows work, bad ids are refused, it learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import epochlab as el
from epochlab.data.sequences import pad_sequences, sequences
from epochlab.models.lstm import lstm_classifier


def _ragged(n: int, vocab: int, maxlen: int, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(1, vocab, size=rng.integers(1, maxlen + 1)).tolist() for _ in range(n)]


def test_pre_and_post_padding_give_the_same_logits():
    seqs = _ragged(16, 50, 12)
    pre = torch.from_numpy(pad_sequences(seqs, 12, padding="pre"))
    post = torch.from_numpy(pad_sequences(seqs, 12, padding="post"))
    assert not torch.equal(pre, post)
    torch.manual_seed(0)
    model = lstm_classifier(50, embed_dim=8, hidden=6).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(pre), model(post), rtol=0, atol=1e-6)


def test_final_state_is_that_of_the_last_real_token():
    seqs = _ragged(8, 50, 10, seed=1)
    torch.manual_seed(0)
    model = lstm_classifier(50, embed_dim=8, hidden=6, out_features=3).eval()
    padded = torch.from_numpy(pad_sequences(seqs, 30, padding="pre"))
    with torch.no_grad():
        unpadded = torch.cat([model(torch.tensor([s])) for s in seqs])
        torch.testing.assert_close(model(padded), unpadded, rtol=0, atol=1e-6)


def test_values_and_gradients_match_a_packed_lstm():
    # The model runs the LSTM unpacked on the left-aligned batch (one oneDNN kernel on a
    # CPU) and reads each row at its length: the packed LSTM's state, gradients included.
    from torch.nn.utils.rnn import pack_padded_sequence

    seqs = _ragged(12, 40, 15, seed=2) + [[]]
    x = torch.from_numpy(pad_sequences(seqs, 20, padding="pre"))
    y = torch.randint(0, 2, (len(seqs), 1)).float()
    torch.manual_seed(0)
    model = lstm_classifier(40, embed_dim=8, hidden=6).eval()  # no dropout: same draws

    def packed(x: torch.Tensor) -> torch.Tensor:
        real = x != 0
        order = torch.argsort((~real).to(torch.int8), dim=1, stable=True)
        lengths = real.sum(dim=1).clamp(min=1)
        emb = model.embedding(torch.gather(x, 1, order))
        p = pack_padded_sequence(emb, lengths, batch_first=True, enforce_sorted=False)
        return model.fc(model.lstm(p)[1][0][-1])

    results = []
    for forward in (model, packed):
        model.zero_grad()
        out = forward(x)
        torch.nn.functional.binary_cross_entropy_with_logits(out, y).backward()
        results.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=1e-6)
    for a, b in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_all_padding_rows_do_not_crash():
    model = lstm_classifier(20, embed_dim=4, hidden=3).eval()
    x = torch.tensor([[0, 0, 0], [0, 5, 6]])
    out = model(x)
    assert out.shape == (2, 1) and torch.isfinite(out).all()


def test_bad_inputs_are_refused_with_the_reason():
    model = lstm_classifier(20)
    with pytest.raises(ValueError, match="integer token ids"):
        model(torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"\[0, 20\)"):
        model(torch.tensor([[1, 25]]))
    with pytest.raises(ValueError, match=r"\(N, T\)"):
        model(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="`padding_idx`"):
        lstm_classifier(20, padding_idx=20)
    with pytest.raises(ValueError, match="`dropout`"):
        lstm_classifier(20, dropout=1.0)


def test_lstm_learns_the_order_dependent_task():
    d = sequences(n_samples=2000, vocab_size=40, maxlen=12, seed=0)
    torch.manual_seed(0)
    model = lstm_classifier(40, embed_dim=16, hidden=16)
    h = el.fit(model, d.train, epochs=6, batch_size=32, lr=1e-2,
               validation_data=d.test, seed=0, verbose=0)
    # Chance is 50% and counting words gets ~60% (see tests/data/test_sequences.py).
    assert h.history["val_accuracy"][-1] > 0.85
