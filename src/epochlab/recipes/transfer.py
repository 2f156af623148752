"""Transfer learning (the seed's slide 10), measured instead of asserted.

The slide freezes an ImageNet MobileNetV2 and trains a head on random noise
with random labels, which can only show chance accuracy and says nothing
about epochs. :func:`transfer_study` instead pretrains the seed's CNN on
digits 0-4, moves its backbone to digits 5-9 under a new head, and counts the
epochs it needs to reach a target test accuracy next to the same
architecture trained from scratch on the same data.

It lives in recipes, above the training loop: the model pieces it uses
(:mod:`epochlab.models.transfer`) are plain modules that never train.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from epochlab.data.digits import digits
from epochlab.models.cnn import cnn
from epochlab.models.transfer import count_parameters, transfer_model, unfreeze
from epochlab.train.history import History
from epochlab.train.loop import fit
from epochlab.train.runtime import manual_seed
from epochlab.validation import ParameterError

__all__ = ["epochs_to_reach", "transfer_study"]


def epochs_to_reach(accuracies: Sequence[float], target: float) -> int | None:
    """The first epoch (1-based) whose accuracy is ``>= target``, or ``None``.

    Example:
        >>> epochs_to_reach([0.5, 0.93, 0.96, 0.97], 0.95)
        3
    """
    return next((i + 1 for i, a in enumerate(accuracies) if a >= target), None)


def transfer_study(
    epochs: int = 10,
    target_accuracy: float = 0.95,
    seed: int = 0,
    *,
    pretrain_epochs: int | None = None,
    fine_tune_epochs: int = 0,
    batch_size: int = 64,
    lr: float = 1e-3,
    head_hidden: int = 64,
    source_labels: Sequence[int] = (0, 1, 2, 3, 4),
    target_labels: Sequence[int] = (5, 6, 7, 8, 9),
    max_train: int | None = None,
    verbose: int = 0,
) -> dict[str, Any]:
    """Does a pretrained backbone reach a target accuracy in fewer epochs than training from scratch?

    1. Pretrain the seed CNN on the digits ``source_labels`` (0-4) for
       ``pretrain_epochs`` (default ``epochs``).
    2. Transfer: copy its backbone, freeze it, put a new head on it and train
       the head on ``target_labels`` (5-9) for ``epochs``; then, if
       ``fine_tune_epochs``, unfreeze everything and train on with ``lr / 10``.
    3. Scratch: the same architecture, freshly initialized, trained on the
       same data for the same total number of epochs at ``lr``.

    Accuracy is measured on the target's held-out test split after every
    epoch; it is only measured, never used to choose anything.

    Args:
        epochs: Epochs of head training (and of scratch training, plus
            ``fine_tune_epochs``).
        target_accuracy: The test accuracy whose first epoch is reported.
        seed: Seeds the data split, the initial weights and the shuffling.
        pretrain_epochs: Epochs on the source digits (default ``epochs``).
        fine_tune_epochs: Epochs of full fine-tuning after the head (0: none).
        batch_size: Batch size of every phase.
        lr: Adam learning rate (fine-tuning uses ``lr / 10``).
        head_hidden: Width of the new head's hidden layer.
        source_labels: Digits to pretrain on.
        target_labels: Digits to transfer to.
        max_train: Use at most this many training rows per task (quick runs).
        verbose: Passed to :func:`epochlab.fit`.

    Returns:
        A dict: ``"target_accuracy"``; ``"pretrain"``, ``"transfer"`` and
        ``"scratch"``, each with per-epoch ``"test_accuracy"`` (transfer's
        head epochs first, then fine-tuning), ``"epochs_to_target"``
        (1-based; ``None`` if never reached), ``"trainable"`` and
        ``"frozen"`` (parameter counts while the head trains), and
        ``"histories"``: the phase's :class:`~epochlab.History` objects (the
        transfer phase has two when it fine-tunes);
        ``transfer["fine_tune_from"]`` is the first fine-tuning epoch or
        ``None``; ``"settings"`` echoes the arguments.

    Example:
        >>> r = transfer_study(epochs=1, pretrain_epochs=1, max_train=100)  # doctest: +SKIP
        >>> r["transfer"]["frozen"], r["scratch"]["frozen"]  # doctest: +SKIP
        (55744, 0)
    """
    pretrain_epochs = epochs if pretrain_epochs is None else pretrain_epochs
    for name, value, low in (
        ("epochs", epochs, 1), ("pretrain_epochs", pretrain_epochs, 1),
        ("fine_tune_epochs", fine_tune_epochs, 0), ("batch_size", batch_size, 1),
    ):
        if not isinstance(value, int) or value < low:
            raise ParameterError(f"The value of `{name}` is {value!r}, but must be `{name} >= {low}`.")
    if not 0.0 < target_accuracy <= 1.0:
        raise ParameterError(
            f"The value of `target_accuracy` is {target_accuracy!r}, but must be in (0, 1]."
        )
    if max_train is not None and max_train < 1:
        raise ParameterError(f"The value of `max_train` is {max_train!r}, but must be `max_train >= 1`.")
    if set(source_labels) & set(target_labels):
        raise ParameterError(
            f"`source_labels` {tuple(source_labels)} and `target_labels` {tuple(target_labels)} "
            "overlap; transfer is measured on digits the backbone has not seen."
        )
    source = digits(seed=seed, labels=source_labels)
    target = digits(seed=seed, labels=target_labels)
    rows = slice(None, max_train)

    histories: dict[str, list[History]] = {"pretrain": [], "transfer": [], "scratch": []}

    def train(model: nn.Module, data: Any, n_epochs: int, rate: float, phase: str) -> list[float]:
        history = fit(
            model, (data.x_train[rows], data.y_train[rows]), epochs=n_epochs,
            batch_size=batch_size, lr=rate, validation_data=data.test, seed=seed, verbose=verbose,
        )
        history.params.update(phase=phase, data="digits", labels=tuple(data.info["labels"]))
        histories[phase].append(history)
        return [float(a) for a in history.history["val_accuracy"]]

    manual_seed(seed)
    pretrained = cnn("seed", n_classes=len(source.classes))
    pre_acc = train(pretrained, source, pretrain_epochs, lr, "pretrain")

    manual_seed(seed)
    moved = transfer_model(pretrained, head_hidden=head_hidden, n_classes=len(target.classes))
    trainable, frozen = count_parameters(moved)
    transfer_acc = train(moved, target, epochs, lr, "transfer")
    if fine_tune_epochs:
        unfreeze(moved.backbone)
        transfer_acc += train(moved, target, fine_tune_epochs, lr / 10, "transfer")

    manual_seed(seed)
    scratch = cnn("seed", n_classes=len(target.classes), hidden=head_hidden)
    scratch_acc = train(scratch, target, epochs + fine_tune_epochs, lr, "scratch")

    return {
        "target_accuracy": target_accuracy,
        "pretrain": {
            "test_accuracy": pre_acc,
            "epochs_to_target": epochs_to_reach(pre_acc, target_accuracy),
            "trainable": count_parameters(pretrained)[0],
            "frozen": count_parameters(pretrained)[1],
            "histories": histories["pretrain"],
        },
        "transfer": {
            "test_accuracy": transfer_acc,
            "epochs_to_target": epochs_to_reach(transfer_acc, target_accuracy),
            "trainable": trainable,
            "frozen": frozen,
            "fine_tune_from": epochs + 1 if fine_tune_epochs else None,
            "histories": histories["transfer"],
        },
        "scratch": {
            "test_accuracy": scratch_acc,
            "epochs_to_target": epochs_to_reach(scratch_acc, target_accuracy),
            "trainable": count_parameters(scratch)[0],
            "frozen": count_parameters(scratch)[1],
            "histories": histories["scratch"],
        },
        "settings": {
            "epochs": epochs, "pretrain_epochs": pretrain_epochs,
            "fine_tune_epochs": fine_tune_epochs, "batch_size": batch_size, "lr": lr,
            "head_hidden": head_hidden, "source_labels": tuple(source_labels),
            "target_labels": tuple(target_labels), "max_train": max_train, "seed": seed,
        },
    }
