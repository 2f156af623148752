"""Choosing the loss from the targets, shaping targets for it, and metrics.

Models return logits. The rule, stated in every History as ``loss_name``:

- targets with non-integer float values -> regression, mean squared error;
- integer labels and a model with 1 output -> binary, ``BCEWithLogitsLoss``
  (labels must be 0 or 1);
- integer labels and a model with C >= 2 outputs -> multiclass,
  ``CrossEntropyLoss`` (labels must lie in ``0..C-1``);
- one-hot float targets of shape (n, C) are turned into class indices.

Pass ``loss="mse" | "bce" | "cross_entropy"`` (or a callable) to override.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from epochlab.validation import ParameterError

LOSS_ALIASES = {
    "bce": "bce",
    "binary_crossentropy": "bce",
    "cross_entropy": "cross_entropy",
    "crossentropy": "cross_entropy",
    "categorical_crossentropy": "cross_entropy",
    "sparse_categorical_crossentropy": "cross_entropy",
    "mse": "mse",
    "mean_squared_error": "mse",
}
TASK_OF_LOSS = {"bce": "binary", "cross_entropy": "multiclass", "mse": "regression"}


@dataclass
class LossSpec:
    """The loss in use and how targets are prepared for it."""

    name: str  # "bce", "cross_entropy", "mse", or the callable's name
    task: str  # "binary", "multiclass", "regression", "custom"
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    reason: str  # why this loss, in words
    prep: str = ""  # how targets are prepared: "bce", "cross_entropy", "mse" ("": as `name`)

    def __post_init__(self) -> None:
        self.prep = self.prep or (self.name if self.name in TASK_OF_LOSS else "custom")


# torch's own loss modules, given as `loss`: their targets get the dtype and shape the
# module takes (a BCEWithLogitsLoss needs float (rows, 1) targets for a (rows, 1) output),
# and nothing the module itself allows is refused (soft targets, ignore_index).
_TORCH_LOSS_KINDS: tuple[tuple[type, str], ...] = (
    (nn.CrossEntropyLoss, "torch_class"), (nn.NLLLoss, "torch_class"),
    (nn.BCEWithLogitsLoss, "torch_shape"), (nn.BCELoss, "torch_shape"),
    (nn.MSELoss, "torch_shape"), (nn.L1Loss, "torch_shape"), (nn.SmoothL1Loss, "torch_shape"),
    (nn.HuberLoss, "torch_shape"),
)


def _torch_loss_task(loss: nn.Module, y: torch.Tensor) -> str:
    """The task a torch loss module trains, for metrics: accuracy where it means something."""
    if isinstance(loss, (nn.CrossEntropyLoss, nn.NLLLoss)):
        return "multiclass" if (y.ndim == 1 and _is_integral(y)) or _is_one_hot(y) else "custom"
    if isinstance(loss, nn.BCEWithLogitsLoss):  # logits: accuracy thresholds them at 0
        return "binary" if bool(((y == 0) | (y == 1)).all()) else "custom"
    if isinstance(loss, nn.BCELoss):  # probabilities: a logits accuracy would be wrong
        return "custom"
    return "regression"


def _is_integral(y: torch.Tensor) -> bool:
    if not y.is_floating_point():
        return True
    return bool(torch.all(y == torch.round(y)))


def _bce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(out, y)


def resolve_loss(loss: object, y: torch.Tensor, out_features: int) -> LossSpec:
    """Pick the loss for targets ``y`` and a model with ``out_features`` outputs."""
    if isinstance(loss, nn.Module):
        for cls, kind in _TORCH_LOSS_KINDS:
            if isinstance(loss, cls):
                return LossSpec(type(loss).__name__, _torch_loss_task(loss, y), loss, "given",
                                kind)
    if callable(loss) and not isinstance(loss, str):
        name = getattr(loss, "__name__", type(loss).__name__)
        return LossSpec(name, "custom", loss, "given")
    if loss is not None:
        key = LOSS_ALIASES.get(str(loss).lower())
        if key is None:
            raise ParameterError(
                f"Unknown loss {loss!r}; choose one of {sorted(set(LOSS_ALIASES))} or pass a callable."
            )
        reason = "given"
    elif y.is_floating_point() and not _is_integral(y) and not _is_one_hot(y):
        key, reason = "mse", "float targets with non-integer values: regression"
    elif out_features == 1:
        key, reason = "bce", "integer labels and 1 model output: binary classification"
    else:
        key, reason = "cross_entropy", f"integer labels and {out_features} model outputs: multiclass"
    fn = {"bce": _bce, "cross_entropy": F.cross_entropy, "mse": F.mse_loss}[key]
    return LossSpec(key, TASK_OF_LOSS[key], fn, reason)


def _is_one_hot(y: torch.Tensor) -> bool:
    return (
        y.ndim == 2
        and y.shape[1] > 1
        and bool(((y == 0) | (y == 1)).all())
        and bool((y.sum(dim=1) == 1).all())
    )


def prepare_targets(
    spec: LossSpec,
    y: torch.Tensor,
    out_shape: tuple[int, ...],
    where: str,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Return ``y`` shaped and typed for the loss; raise if the labels cannot fit it.

    ``out_shape`` is the model's output shape for a probe batch (rows first);
    float targets take ``dtype``, the model's (float64 models get float64 losses).
    """
    if spec.prep == "custom":
        return y
    if spec.prep == "torch_class":
        if _is_one_hot(y):  # class indices: the same loss, and what NLLLoss takes
            y = y.argmax(dim=1)
        if not (y.ndim == len(out_shape) - 1 and _is_integral(y)):
            if isinstance(spec.fn, nn.NLLLoss):
                raise ParameterError(
                    f"{where}: NLLLoss takes one integer class label per row; got y of shape "
                    f"{tuple(y.shape)} and dtype {y.dtype} (soft targets need "
                    "nn.CrossEntropyLoss)."
                )
            return y.to(dtype)  # class probabilities (soft targets): as the module takes them
        ignore = getattr(spec.fn, "ignore_index", None)
        labels = y[y != ignore] if ignore is not None else y
        n_out = out_shape[1] if len(out_shape) >= 2 else None
        if labels.numel() and n_out is not None and (int(labels.min()) < 0
                                                      or int(labels.max()) >= n_out):
            raise ParameterError(
                f"{where}: y has labels {int(labels.min())}..{int(labels.max())} but the model "
                f"outputs {n_out} values per row; labels must lie in 0..{n_out - 1}"
                + (f" (or be ignore_index={ignore})." if ignore is not None else ".")
            )
        return y.long()
    if spec.prep == "torch_shape":
        y = y.to(dtype)
        want = tuple(out_shape[1:])
        if tuple(y.shape[1:]) != want:
            if math.prod(y.shape[1:]) == math.prod(want):  # (N,) for (N, 1), and back
                return y.reshape(-1, *want)
            raise ParameterError(
                f"{where}: the model outputs shape {tuple(out_shape)} but the targets have shape "
                f"(rows, {', '.join(map(str, y.shape[1:]))}); {spec.name} would broadcast them "
                "against each other into a loss of the wrong shape."
            )
        return y
    if spec.prep == "cross_entropy":
        if _is_one_hot(y):
            y = y.argmax(dim=1)
        if not _is_integral(y) or y.ndim != 1:
            hint = ""
            if y.ndim == 2 and y.shape[1] == 1:
                hint = " Flatten it: `y.ravel()` (NumPy) or `y.flatten()` (torch)."
            elif y.ndim == 2 and _is_integral(y) and bool(((y == 0) | (y == 1)).all()):
                hint = (" Rows with several 1s are multi-label targets: train them with "
                        "loss='bce' (one sigmoid output per label).")
            elif not _is_integral(y):
                hint = " Values that are not whole numbers are regression targets: loss='mse'."
            raise ParameterError(
                f"{where}: cross-entropy needs one integer class label per row; got y of shape "
                f"{tuple(y.shape)} and dtype {y.dtype}.{hint}"
            )
        n_out = out_shape[1] if len(out_shape) == 2 else None
        if n_out is None:
            raise ParameterError(
                f"{where}: for multiclass labels the model must output (rows, classes); "
                f"it outputs shape {out_shape}."
            )
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= n_out:
            raise ParameterError(
                f"{where}: y has labels {lo}..{hi} ({hi + 1} classes) but the model outputs "
                f"{n_out} values per row; labels must lie in 0..{n_out - 1}. "
                + (f"If the classes are numbered from 1, subtract 1 (`y - 1`); otherwise build "
                   f"the model with out_features={hi + 1}."
                   if lo == 1 and hi == n_out else f"Build the model with out_features={hi + 1}.")
            )
        return y.long()
    if spec.prep == "bce":
        y = y.reshape(-1, 1) if y.ndim == 1 else y
        if tuple(out_shape[1:]) != tuple(y.shape[1:]):
            raise ParameterError(
                f"{where}: the model outputs shape {out_shape} but binary targets need "
                f"(rows, {', '.join(map(str, y.shape[1:]))})."
            )
        vals = torch.unique(y)
        if not bool(((vals == 0) | (vals == 1)).all()):
            shown = vals[:10].tolist()
            raise ParameterError(
                f"{where}: a model with 1 output is trained as binary classification, but y has "
                f"values {shown}{'...' if len(vals) > 10 else ''}, not only 0 and 1. "
                f"For {len(vals)} classes build the model with out_features={len(vals)}; "
                "for regression targets pass loss='mse' (Python)."
            )
        return y.to(dtype)
    # mse
    y = y.to(dtype)
    if y.ndim == 1 and len(out_shape) == 2 and out_shape[1] == 1:
        y = y.reshape(-1, 1)
    if tuple(out_shape[1:]) != tuple(y.shape[1:]):
        targets = ("one value per row" if y.ndim == 1 else
                   f"shape (rows, {', '.join(map(str, y.shape[1:]))})")
        hint = ""
        if y.ndim == 1 and len(out_shape) == 2 and not _is_integral(y):
            hint = (f" y holds values that are not whole numbers (e.g. "
                    f"{float(y[~(y == y.round())][0]):g}), so it was read as regression "
                    f"targets; class labels must be the integers 0..{out_shape[1] - 1}, and "
                    "a regression model has 1 output.")
        raise ParameterError(
            f"{where}: the model outputs shape {out_shape} but the regression targets "
            f"have {targets}.{hint}"
        )
    return y


# Metrics: name -> fn(output, target) returning the *sum* over the batch
# (so epoch values are exact row-weighted means).
def _accuracy_sum(task: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if task == "binary":
        return lambda out, y: ((out > 0) == (y > 0.5)).sum()
    if task == "multiclass":
        return lambda out, y: (out.argmax(dim=1) == y).sum()
    raise ParameterError(f"The metric 'accuracy' needs a classification task; this one is {task}.")


def _mae_sum(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (out - y).abs().mean(dim=tuple(range(1, out.ndim))).sum() if out.ndim > 1 else (out - y).abs().sum()


METRICS = {"accuracy": _accuracy_sum, "mae": lambda task: _mae_sum}


def resolve_metrics(
    names: tuple[str, ...] | list[str], task: str
) -> dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    """Map metric names to batch-sum functions; 'accuracy' is skipped for regression."""
    out = {}
    for m in names:
        if m not in METRICS:
            raise ParameterError(f"Unknown metric {m!r}; choose from {sorted(METRICS)}.")
        if m == "accuracy" and task in ("regression", "custom"):
            continue  # the default metric list includes accuracy; it does not apply here
        if m == "mae" and task in ("binary", "multiclass"):
            raise ParameterError(f"The metric 'mae' measures regression targets; this task is "
                                 f"{task} (its metric is 'accuracy').")
        out[m] = METRICS[m](task)
    return out


def integer_input_hint(x: torch.Tensor, error: Exception) -> str:
    """How to fix integer inputs that reached a layer computing in floats (fit keeps integer
    X as is, for models that look the values up with ``nn.Embedding``); "" for other errors.

    Example:
        >>> e = RuntimeError("mat1 and mat2 must have the same dtype, but got Long and Float")
        >>> integer_input_hint(torch.zeros(2, 3, dtype=torch.long), e)[:33]
        '. X holds integers (int64), which'
    """
    text = str(error)
    if x.is_floating_point() or x.is_complex() or not any(
            s in text for s in ("dtype", "scalar type", "Long", "Int", "Input type", "Byte")):
        return ""
    scale = " / 255` for 8-bit images" if x.dtype == torch.uint8 else "`"
    return (f". X holds integers ({str(x.dtype).removeprefix('torch.')}), which fit passes on "
            "unchanged for models that look them up (nn.Embedding); for this model convert "
            f"them to floats first (`np.asarray(X, dtype=np.float32){scale} or `x.float()`).")


def out_features_of(model: nn.Module, x_probe: torch.Tensor) -> tuple[int, ...]:
    """The model's output shape on a probe batch, in eval mode and without gradients."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():  # a copy: a model that writes into its input leaves X alone
            out = model(x_probe.clone())
    except Exception as e:  # a shape error deep in the model: say where it came from
        # Not a ParameterError: the model's own code failed, which may be a bug in it.
        raise ValueError(
            f"The model failed on a batch of input shape {tuple(x_probe.shape)}: {e}"
            f"{integer_input_hint(x_probe, e)}"
        ) from e
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor):
        what = (f"a dict with keys {sorted(map(str, out))[:5]}" if isinstance(out, dict)
                else f"a {type(out).__name__}"
                + (f" of {len(out)}" if isinstance(out, (tuple, list)) else ""))
        raise ParameterError(
            f"The model returned {what}, but must return one tensor: the logits, one row per "
            "input row. Return that tensor from forward (e.g. "
            f"`return {'out[' + repr(next(iter(out))) + ']' if isinstance(out, dict) and out else 'out[0]'}`"
            "), or wrap the model in a module that does."
        )
    return tuple(out.shape)
