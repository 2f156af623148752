"""Run under ``torchrun --nproc_per_node 2`` by test_distributed.py; not a test itself.

Trains the cases the test checks (padding, drop_last, SGD and Adam on float64)
data-parallel, and saves each rank's History and final weights to OUT.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

import epochlab as el


def data(n: int, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, 6)).astype(dtype)
    return x, (x[:, 0] - x[:, 2] > 0).astype(np.int64)


def net(dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2)).to(dtype)


class Marker(el.Callback):
    """Writes nothing, but says where it ran: only rank 0 runs a rank_zero_only callback."""

    rank_zero_only = True

    def on_train_end(self, trainer, logs):
        trainer.history.extra["marker_rank"] = torch.distributed.get_rank()


class StopAt(el.Callback):
    """Stops every rank after update ``step``, as a kill would (no checkpoint at that step)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_batch_end(self, trainer, logs):
        if trainer.state.global_step == self.step:
            trainer.stop("interrupted")


def dropout_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Dropout(0.3), nn.Linear(16, 2))


def case(out: Path, name: str, model: nn.Module, xy, **kw) -> None:
    h = el.fit(model, xy, verbose=0, distributed=True, **kw)
    rank = torch.distributed.get_rank()
    h.save(out / f"{name}.rank{rank}.json")
    torch.save(model.state_dict(), out / f"{name}.rank{rank}.pt")


def main(out: Path) -> None:
    torch.set_num_threads(1)
    xv, yv = data(27)
    # 101 training rows over 2 ranks: 51 each, one padded duplicate per epoch.
    common = dict(epochs=2, batch_size=16, validation_data=(xv, yv), optimizer="sgd", lr=0.1)
    case(out, "pad", net(torch.float32), data(101), **common)
    case(out, "drop", net(torch.float32), data(101), drop_last=True, **common)
    # 100 rows (no padding), float64: the same updates as one process with batch 32.
    for opt in ("sgd", "adam"):
        case(out, f"same_{opt}", net(torch.float64), data(100, np.float64), epochs=1,
             batch_size=16, optimizer=opt, lr=0.05)
    # min_delta 10 cannot be met: every rank stops after epoch 2, on the same reduced val_loss.
    stop = el.EarlyStopping(monitor="val_loss", patience=0, min_delta=10.0)
    case(out, "early", net(torch.float32), data(101), epochs=5, batch_size=16,
         validation_split=0.2, callbacks=[stop, Marker()])
    # Stopped after update 7 of 12 (mid-epoch 2), resumed from the checkpoint of update 6.
    resume_kw = dict(epochs=3, batch_size=16, validation_split=0.2, optimizer="adam", lr=0.01)
    case(out, "whole", dropout_net(), data(131), **resume_kw)
    folder = out / "ckpts"  # one folder for all ranks: rank 0 writes, every rank reads
    el.fit(dropout_net(), data(131), verbose=0, distributed=True, checkpoint_dir=folder,
           checkpoint_every=3, callbacks=[StopAt(7)], **resume_kw)
    case(out, "resumed", dropout_net(), data(131), checkpoint_dir=folder, checkpoint_every=3,
         resume=True, **resume_kw)
    case(out, "scaled", net(torch.float32), data(101), epochs=2, batch_size=16, lr=0.01,
         lr_scaling="linear", lr_warmup_epochs=1)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
