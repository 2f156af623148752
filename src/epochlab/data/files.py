"""A user's own data as a :class:`DataBundle`: arrays, ``.npz`` files, CSV files.

- :func:`from_arrays`: ``(X, y)`` (and optionally a test split) with the task
  read off the labels as ``fit`` reads it: float targets with non-integer
  values are regression; integer labels are classes (binary for two).
- :func:`load_npz`: arrays ``X``/``y``, or ``x_train``/``y_train`` with
  optional ``x_test``/``y_test``.
- :func:`load_csv`: a header row; every column but ``target`` is a feature
  and must be numeric (a non-numeric one is an error naming it); the target
  holds numbers or class names (encoded as ids 0..K-1 in sorted order).
"""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from epochlab.data.base import DataBundle
from epochlab.validation import ParameterError

__all__ = ["from_arrays", "load_csv", "load_file", "load_npz"]


def _task(y: np.ndarray) -> tuple[str, tuple[str, ...]]:
    if y.dtype.kind == "f" and not np.all(np.isfinite(y) & (y == np.round(y))):
        return "regression", ()
    if y.dtype.kind not in "fiub":
        return "regression", ()
    if y.ndim > 1:
        return ("multiclass", tuple(str(i) for i in range(y.shape[1]))) if y.shape[1] > 1 \
            else ("binary", ("0", "1"))
    labels = np.unique(y)
    n = int(labels.max()) + 1 if len(labels) else 0
    lo = int(labels.min()) if len(labels) else 0
    if lo < 0 or n > MAX_CLASSES:
        why = (f"negative whole numbers (down to {lo}), but class ids are 0..K-1" if lo < 0 else
               f"whole numbers up to {n - 1:,}: as class ids the model would need {n:,} outputs")
        raise ParameterError(
            f"y holds {why}. If these are classes, number them 0..K-1 first "
            "(`classes, y = np.unique(y, return_inverse=True)`). If y is a quantity to "
            "predict (regression), note that whole numbers are read as class ids: train it "
            "from Python with `el.fit(model, (X, y.astype('float32')), loss='mse', ...)`."
        )
    if n <= 2:
        return "binary", ("0", "1")
    return "multiclass", tuple(str(i) for i in range(n))


# More class ids than this is taken for a mistake (a regression target of whole numbers).
MAX_CLASSES = 1000


def _named_classes(y: np.ndarray, y_test: np.ndarray | None, where: str,
                   ) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...]]:
    """Text labels as class ids 0..K-1, the names in sorted order; the test labels by the
    same names (a name only the test split has is an error)."""
    names = sorted({str(v).strip() for v in y.ravel()})
    if "" in names:
        raise ParameterError(f"{where}: a label is empty; every row needs its class name.")
    ids = {n: i for i, n in enumerate(names)}
    coded = np.array([ids[str(v).strip()] for v in y.ravel()], dtype=np.int64).reshape(y.shape)
    coded_test = None
    if y_test is not None:
        unknown = sorted({str(v).strip() for v in y_test.ravel()} - set(ids))
        if unknown:
            raise ParameterError(
                f"{where}: the test labels {unknown[:5]} are not among the training labels "
                f"{names[:10]}{'...' if len(names) > 10 else ''}."
            )
        coded_test = np.array([ids[str(v).strip()] for v in y_test.ravel()],
                              dtype=np.int64).reshape(y_test.shape)
    return coded, coded_test, tuple(names)


def from_arrays(
    x: Any, y: Any, *, name: str = "arrays", x_test: Any = None, y_test: Any = None,
) -> DataBundle:
    """A DataBundle of the user's arrays (an empty test split when none is given).

    Labels given as text (class names) become class ids 0..K-1, the names in
    sorted order; ``classes`` keeps the names.

    Example:
        >>> import numpy as np
        >>> d = from_arrays(np.zeros((6, 3), np.float32), np.array([0, 1, 2, 0, 1, 2]))
        >>> d.task, d.n_classes, d.input_shape, d.x_test.shape
        ('multiclass', 3, (3,), (0, 3))
        >>> from_arrays(np.zeros((3, 2)), np.array(["dog", "cat", "dog"])).y_train.tolist()
        [1, 0, 1]
    """
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 1 and y.ndim >= 1 and x.shape[0] == y.shape[0]:
        raise ParameterError(
            f"X of {name!r} is 1-D, shape {x.shape}: one value per row? Make it a column, "
            "X.reshape(-1, 1); every row of X is one example's features."
        )
    if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0]:
        raise ParameterError(
            f"The value of `data` is arrays of shapes {x.shape} and {y.shape}, but must be "
            "(X, y) with one row per example in both."
        )
    names: tuple[str, ...] = ()
    if y.dtype.kind in "US":
        y_test = None if y_test is None else np.asarray(y_test)
        y, y_test, names = _named_classes(y, y_test, f"The labels of {name!r}")
    if x_test is None:
        x_test, y_test = x[:0], y[:0]
    task, classes = _task(y)
    if names:
        task, classes = ("binary" if len(names) <= 2 else "multiclass"), names
    return DataBundle(name=name, x_train=x, y_train=y, x_test=np.asarray(x_test),
                      y_test=np.asarray(y_test), task=task,  # type: ignore[arg-type]
                      classes=classes, input_shape=tuple(x.shape[1:]))


def load_npz(path: str | Path) -> DataBundle:
    """Arrays ``X`` (or ``x``, ``x_train``, ``X_train``) and ``y`` (or ``y_train``), with an
    optional test split ``x_test`` (or ``X_test``) and ``y_test``.

    Example:
        >>> import numpy as np, tempfile
        >>> p = tempfile.mkdtemp() + "/d.npz"
        >>> np.savez(p, X=np.zeros((4, 2)), y=np.array([0, 1, 0, 1]))
        >>> load_npz(p).x_train.shape
        (4, 2)
    """
    path = Path(path)
    try:
        f = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:  # not a zip: a pickle, text, another format
        raise ParameterError(
            f"The file {str(path)!r} is not an .npz archive (as np.savez writes): "
            f"{'it holds text or a pickle' if 'pickle' in str(e) else e}."
        ) from None
    if not hasattr(f, "files"):  # a single .npy array renamed .npz
        raise ParameterError(f"The file {str(path)!r} holds one array (.npy), but an .npz "
                             "archive of X and y is needed: np.savez(path, X=X, y=y).")
    with f:
        names = set(f.files)
        # np.savez(path, x=..., y=...) is as common as X; a test split may come with either.
        pairs = (("X", "y"), ("x", "y"), ("x_train", "y_train"), ("X_train", "y_train"))
        train = next((p for p in pairs if set(p) <= names), None)
        x_test = next((n for n in ("x_test", "X_test") if n in names), None)
        if train is not None and (x_test is None) == ("y_test" in names):
            given = x_test or "y_test"
            raise ParameterError(
                f"The file {str(path)!r} holds {given} but not "
                f"{'y_test' if x_test else 'x_test'}; a test split needs both (or neither)."
            )
        if train is not None:
            try:
                arrays = {k: f[k] for k in (*train, *((x_test, "y_test") if x_test else ()))}
            except ValueError as e:  # object arrays need pickle, which is never loaded
                raise ParameterError(
                    f"The file {str(path)!r} holds an object array ({e}); save numbers or "
                    "strings instead (np.asarray(X, dtype=np.float32); text labels as str)."
                ) from None
            test = {"x_test": arrays[x_test], "y_test": arrays["y_test"]} if x_test else {}
            return from_arrays(arrays[train[0]], arrays[train[1]], name=path.name, **test)
    raise ParameterError(
        f"The file {str(path)!r} holds arrays {sorted(names)}, but must hold X (or x) and y, or "
        "x_train and y_train (with optional x_test and y_test)."
    )


def _numeric(cells: Any) -> bool:
    """Whether every cell reads as a number (none at all: True)."""
    try:
        for c in cells:
            float(c)
    except ValueError:
        return False
    return True


# Cells that mean "no value" in CSV files as spreadsheets and pandas write them.
_MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "?", "-", "#n/a"})


def load_csv(path: str | Path, target: str | None) -> DataBundle:
    """A CSV file with a header row: ``target`` is the label column, the others features.

    Example:
        >>> import tempfile
        >>> p = tempfile.mkdtemp() + "/d.csv"
        >>> _ = open(p, "w").write("a,b,label\\n1,2,0\\n3,4,1\\n")
        >>> d = load_csv(p, "label")
        >>> d.x_train.tolist(), d.y_train.tolist(), d.task
        ([[1.0, 2.0], [3.0, 4.0]], [0, 1], 'binary')
    """
    path = Path(path)
    try:  # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except UnicodeDecodeError as e:
        raise ParameterError(
            f"The file {str(path)!r} is not UTF-8 text (byte {e.object[e.start]:#04x} at "
            f"position {e.start}); save it as UTF-8 (in Excel: CSV UTF-8) and try again."
        ) from None
    if not rows:
        raise ParameterError(f"The file {str(path)!r} is empty, but must have a header row.")
    header = [h.strip() for h in rows[0]]
    while len(header) > 1 and not header[-1]:  # a trailing comma on the header line
        header.pop()
    # A line of nothing but blanks is no row; empty fields past the header's (a trailing
    # comma on every line, as some exporters write) are dropped.
    lines = [(i, r[:len(header)] if not any(c.strip() for c in r[len(header):]) else r)
             for i, r in enumerate(rows[1:], start=2) if any(c.strip() for c in r)]
    body = [r for _, r in lines]
    if "" in header:  # pandas writes its index as a first column without a name
        raise ParameterError(
            f"Column {header.index('') + 1} of {str(path)!r} has no name (pandas writes its "
            "index so: save with to_csv(index=False)); name the column, or drop it if it only "
            "numbers the rows."
        )
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise ParameterError(
            f"The header of {str(path)!r} names {dup[0]!r} twice; every column needs its own "
            "name (which column is which is otherwise a guess)."
        )
    for i, r in lines:
        if len(r) != len(header):
            raise ParameterError(
                f"Line {i} of {str(path)!r} has {len(r)} fields but the header has "
                f"{len(header)}; every row needs one value per column."
            )
    if target is None:
        raise ParameterError(
            f"The value of `--target` is missing, but a CSV file needs it: one of {header}."
        )
    if target not in header:
        raise ParameterError(
            f"The value of `--target` is {target!r}, but must be a column of {str(path)!r}: "
            f"{', '.join(header)}."
        )
    if not body:
        raise ParameterError(f"The file {str(path)!r} has a header but no rows.")
    cols: dict[str, np.ndarray] = {}
    for j, name in enumerate(header):
        values: list[Any] = []
        cells = [r[j].strip() for r in body]
        if name == target:
            missing = [i for i, c in enumerate(cells, start=2) if c.lower() in _MISSING]
            if missing and not _numeric(c for c in cells if c.lower() not in _MISSING):
                # Class names: an empty cell is a missing label; "NA" or "None" may be a class.
                words = sorted({cells[i - 2] for i in missing} - {""})
                if words:
                    warnings.warn(
                        f"The target column {name!r} of {str(path)!r} has the class(es) "
                        f"{', '.join(map(repr, words))}, which often mark a missing label: if "
                        "they do, drop those rows.", UserWarning, stacklevel=3)
                missing = [i for i in missing if not cells[i - 2]]
            if missing:
                first = cells[missing[0] - 2]
                raise ParameterError(
                    f"The target column {name!r} of {str(path)!r} has no value on "
                    f"{len(missing)} row(s) (line {missing[0]}: {repr(first) if first else 'empty'}); "
                    "every row needs its target: drop those rows or fill them in"
                    + (" (if this is a class name, rename the class)." if first else ".")
                )
        for i, cell in enumerate(cells, start=2):
            try:
                values.append(float(cell))
            except ValueError:
                if name == target:  # class names (none missing: checked above): encoded below
                    values = cells
                    break
                what = "is empty" if not cell else f"holds {cell!r}"
                raise ParameterError(
                    f"Column {name!r} of {str(path)!r} is not numeric: line {i} {what}. Every "
                    "feature column must hold numbers (the target may hold numbers or class "
                    "names)."
                ) from None
        cols[name] = np.array(values)
    y = cols.pop(target)  # class names stay text: from_arrays encodes them
    if y.dtype.kind not in "US" and all(math.isfinite(v) and v == round(v) for v in y):
        y = y.astype(np.int64)  # whole numbers: class labels
    x = np.stack(list(cols.values()), axis=1).astype(np.float32) if cols else None
    if x is None:
        raise ParameterError(f"The file {str(path)!r} has no feature columns besides {target!r}.")
    return from_arrays(x, y, name=path.name)


def load_file(path: str | Path, target: str | None = None) -> DataBundle:
    """A ``.npz`` or ``.csv`` file by its suffix."""
    path = Path(path)
    if path.is_dir():
        raise ParameterError(f"The data file {str(path)!r} is a folder; give the file in it.")
    if not path.is_file():
        raise ParameterError(f"The data file {str(path)!r} does not exist.")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return load_npz(path)
    if suffix == ".csv":
        return load_csv(path, target)
    raise ParameterError(
        f"The data file {str(path)!r} has suffix {suffix!r}, but must be .npz or .csv."
    )
