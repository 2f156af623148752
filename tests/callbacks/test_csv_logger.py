"""CSVLogger: one row per epoch, header from the first row, flushed every epoch, append."""

from __future__ import annotations

import csv

import pytest

import epochlab as el


class CountRows(el.Callback):
    """Reads the CSV file while training runs (given after the logger)."""

    def __init__(self, path):
        self.path, self.seen = path, []

    def on_epoch_end(self, trainer, logs):
        with open(self.path, newline="") as f:
            self.seen.append(len(list(csv.DictReader(f))))


def fit_small(xy, callbacks, epochs=3):
    return el.fit(el.models.mlp(5), xy, epochs=epochs, batch_size=16, validation_split=0.25,
                  callbacks=callbacks, verbose=0)


def read(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_one_row_per_epoch_equal_to_the_history(small_xy, tmp_path):
    path = tmp_path / "logs" / "train.csv"
    h = fit_small(small_xy, [el.CSVLogger(path)])
    header, *rows = read(path)
    assert header == list(h.epochs[0])
    assert len(rows) == 3
    for row, epoch in zip(rows, h.epochs, strict=True):
        assert [float(v) for v in row] == [float(epoch[k]) for k in header]


def test_rows_are_flushed_every_epoch(small_xy, tmp_path):
    path = tmp_path / "train.csv"
    counter = CountRows(path)
    fit_small(small_xy, [el.CSVLogger(path), counter])
    assert counter.seen == [1, 2, 3]


def test_append_adds_rows_under_one_header_and_overwrite_starts_again(small_xy, tmp_path):
    path = tmp_path / "train.csv"
    fit_small(small_xy, [el.CSVLogger(path)], epochs=2)
    fit_small(small_xy, [el.CSVLogger(path, append=True)], epochs=2)
    table = read(path)
    assert len(table) == 5 and table[0][0] == "epoch"
    assert [r[0] for r in table[1:]] == ["0", "1", "0", "1"]
    fit_small(small_xy, [el.CSVLogger(path)], epochs=1)
    assert len(read(path)) == 2


def test_append_to_a_file_with_other_columns_is_an_error(small_xy, tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("epoch,something_else\n0,1\n")
    with pytest.raises(ValueError, match="has columns"):
        fit_small(small_xy, [el.CSVLogger(path, append=True)], epochs=1)


def test_arguments_are_validated_at_construction(tmp_path):
    with pytest.raises(TypeError, match="`append` is 1"):
        el.CSVLogger(tmp_path / "x.csv", append=1)
    with pytest.raises(TypeError, match="`path` is None"):
        el.CSVLogger(None)


def test_a_folder_as_the_path_is_refused_when_made(tmp_path):
    with pytest.raises(el.ParameterError, match="a folder, but must be a file path"):
        el.CSVLogger(tmp_path)
