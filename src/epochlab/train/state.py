"""Everything an exact resume needs, in one object.

A :class:`TrainState` holds the model, the optimizer, the schedule and its
scale, every RNG (the shuffling generator, torch's RNG used by dropout), the
position in the epoch (the epoch's permutation and the batches done), the
counters and the History. ``state_dict(callbacks)`` is one mapping of tensors
and plain data, loadable with ``torch.load(weights_only=True)``; the
callbacks' states in it are keyed by :meth:`Callback.state_key
<epochlab.callbacks.base.Callback.state_key>` (class name and monitor), never
by their position in the list, and ``load_state_dict`` refuses a mapping
whose callback keys differ from the callbacks given.

torch's RNG is not set by ``load_state_dict``: the state is kept in
``torch_rng`` and the training loop installs it inside its own
``fork_rng`` block, so loading a checkpoint never changes the caller's RNG.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from epochlab.callbacks.base import Callback
from epochlab.train.history import History
from epochlab.validation import ParameterError


def callback_states(callbacks: list | tuple) -> dict[str, Any]:
    """``{state_key: state_dict()}`` of the callbacks that keep state, in order.

    Two callbacks with the same key (two ``EarlyStopping("val_loss")``) get
    ``"#2"``, ``"#3"`` appended, in the order given.

    Example:
        >>> import epochlab as el
        >>> sorted(callback_states([el.EarlyStopping(patience=2), el.callbacks.ProgressBar()]))
        ['EarlyStopping(val_loss)']
    """
    out: dict[str, Any] = {}
    for cb in callbacks:
        if type(cb).state_dict is Callback.state_dict:  # keeps no state
            continue
        key = base = cb.state_key()
        n = 1
        while key in out:
            n += 1
            key = f"{base} #{n}"
        out[key] = cb.state_dict()
    return out


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
    torch_rng: torch.Tensor | None = None  # loaded, not yet installed by the loop
    cuda_rng: torch.Tensor | None = None  # likewise, for a model on a CUDA device

    def lr_at(self, step: int, epoch: int) -> float:
        """The learning rate for update ``step`` (0-based) in ``epoch``."""
        base = self.schedule(step, epoch) if self.schedule is not None else self.base_lr
        return base * self.lr_scale

    def state_dict(self, callbacks: list | tuple = ()) -> dict[str, Any]:
        """One mapping of everything a resume needs (tensors and plain data)."""
        device = next((p.device for p in self.model.parameters()), torch.device("cpu"))
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
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "history": self.history.to_dict(),
            "callbacks": callback_states(callbacks),
        }

    def load_state_dict(self, d: dict[str, Any], callbacks: list | tuple = ()) -> None:
        """Restore :meth:`state_dict` output into this state (model and optimizer in place).

        Raises:
            ParameterError: the saved callback states are not those of ``callbacks``
                (checked before anything is changed).
        """
        from epochlab.schedules import from_config

        saved = d.get("callbacks", {})
        if not isinstance(saved, dict):
            raise ParameterError(
                "This checkpoint keeps its callback states by list position (an older format); "
                "callback states are now matched by key. Start the run again."
            )
        states = callback_states(callbacks)
        if set(saved) != set(states):
            raise ParameterError(
                "The checkpoint's callback states do not match this run's callbacks: the "
                f"checkpoint has {sorted(saved) or 'none'}, this run has {sorted(states) or 'none'}. "
                "Resume with the same callbacks (same classes and monitored metrics)."
            )
        self.model.load_state_dict(d["model"])
        self.optimizer.load_state_dict(d["optimizer"])
        for k in ("base_lr", "lr_scale", "epoch", "global_step", "batch_in_epoch", "samples_seen"):
            setattr(self, k, d[k])
        self.samples_repeated = d.get("samples_repeated", 0)
        # The schedule as saved (bound to its total length), not the base rate: a resumed
        # cosine run must go on along its cosine.
        self.schedule = from_config(d["schedule"]) if d["schedule"] is not None else None
        self.epoch_order = d["epoch_order"]
        self.generator.set_state(d["generator"])
        self.torch_rng, self.cuda_rng = d["torch_rng"], d.get("cuda_rng")
        self.history = History.from_dict(d["history"])
        by_key = dict(zip(states, [cb for cb in callbacks
                                   if type(cb).state_dict is not Callback.state_dict],
                          strict=True))
        for key, cb in by_key.items():
            cb.load_state_dict(saved[key])

    def install_rngs(self) -> None:
        """Set torch's RNGs to the loaded state (the loop calls this inside ``fork_rng``)."""
        if self.torch_rng is not None:
            torch.set_rng_state(self.torch_rng)
        if self.cuda_rng is not None:
            device = next(p.device for p in self.model.parameters())
            torch.cuda.set_rng_state(self.cuda_rng, device)
        self.torch_rng = self.cuda_rng = None
