"""Everything an exact resume needs, in one object.

A :class:`TrainState` holds the model, the optimizer, the schedule and its
scale, every RNG (the shuffling generator, torch's global RNG used by
dropout), the position in the epoch (the epoch's permutation and the batches
done), the counters and the History. ``state_dict()`` is one mapping of
tensors and plain data, loadable with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from epochlab.train.history import History


@dataclass
class TrainState:
    """The training state: model, optimizer, schedule, RNGs, counters, History."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Any  # an epochlab.schedules.Schedule, or None for a constant rate
    base_lr: float
    generator: torch.Generator
    history: History = field(default_factory=History)
    lr_scale: float = 1.0  # multiplied into the schedule; ReduceLROnPlateau changes it
    epoch: int = 0  # epochs completed
    global_step: int = 0  # optimizer updates done
    batch_in_epoch: int = 0  # batches done in the current epoch
    samples_seen: int = 0
    samples_repeated: int = 0  # padded duplicates trained on (data-parallel runs)
    epoch_order: torch.Tensor | None = None  # the current epoch's permutation

    def lr_at(self, step: int, epoch: int) -> float:
        """The learning rate for update ``step`` (0-based) in ``epoch``."""
        base = self.schedule(step, epoch) if self.schedule is not None else self.base_lr
        return base * self.lr_scale

    def state_dict(self, callbacks: list | tuple = ()) -> dict[str, Any]:
        """One mapping of everything a resume needs (tensors and plain data)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.to_config() if self.schedule is not None else None,
            "base_lr": self.base_lr,
            "lr_scale": self.lr_scale,
            "epoch": self.epoch,
            "global_step": self.global_step,
            "batch_in_epoch": self.batch_in_epoch,
            "samples_seen": self.samples_seen,
            "samples_repeated": self.samples_repeated,
            "epoch_order": self.epoch_order,
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": self.history.to_dict(),
            "callbacks": [cb.state_dict() for cb in callbacks],
        }

    def load_state_dict(self, d: dict[str, Any], callbacks: list | tuple = ()) -> None:
        """Restore :meth:`state_dict` output into this state (model and optimizer in place)."""
        self.model.load_state_dict(d["model"])
        self.optimizer.load_state_dict(d["optimizer"])
        for k in ("base_lr", "lr_scale", "epoch", "global_step", "batch_in_epoch", "samples_seen"):
            setattr(self, k, d[k])
        self.samples_repeated = d.get("samples_repeated", 0)
        self.epoch_order = d["epoch_order"]
        self.generator.set_state(d["generator"])
        torch.set_rng_state(d["torch_rng"])
        self.history = History.from_dict(d["history"])
        for cb, s in zip(callbacks, d.get("callbacks", []), strict=False):
            cb.load_state_dict(s)
