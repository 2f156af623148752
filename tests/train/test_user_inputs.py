"""What users actually pass to fit: optimizer instances, Datasets, Keras-style arguments,
torch loss modules. Each is either honoured exactly or refused before training, by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

import epochlab as el


@pytest.fixture
def data():
    return el.data.synthetic(n_samples=300)


def _fit(model, train, **kw):
    return el.fit(model, train, **{"epochs": 1, "batch_size": 32, "verbose": 0, **kw})


class Pairs(Dataset):
    """A plain map-style Dataset (not a TensorDataset): the row-by-row path."""

    def __init__(self, x, y, item=lambda x, y: (x, y)):
        self.x, self.y, self.item = x, y, item

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.item(self.x[i], self.y[i])


# -- optimizer instances -------------------------------------------------------------------

def test_an_optimizer_instance_trains_at_its_own_rate(data):
    torch.manual_seed(0)
    m = el.models.mlp(20)
    opt = torch.optim.SGD(m.parameters(), lr=0.5, momentum=0.9)
    h = _fit(m, data.train, optimizer=opt)
    assert h.params["lr"] == 0.5
    assert set(h.iterations["lr"]) == {0.5}


def test_parameter_groups_keep_their_ratio_to_the_first(data):
    torch.manual_seed(0)
    m = el.models.mlp(20)
    opt = torch.optim.SGD([{"params": m[0].parameters(), "lr": 0.01},
                           {"params": m[2].parameters()}], lr=0.1)
    _fit(m, data.train, optimizer=opt, schedule=el.schedules.exponential_decay(0.2, 5, 0.5))
    first, second = (g["lr"] for g in opt.param_groups)
    assert first < 0.2 and second == pytest.approx(10 * first)


@pytest.mark.parametrize("make, kw, match", [
    (lambda m, o: torch.optim.Adam(o.parameters()), {}, "holds none of the model's parameters"),
    (lambda m, o: torch.optim.Adam([*m.parameters(), *o.parameters()]), {}, "not the model's"),
    (lambda m, o: torch.optim.SGD(m.parameters(), lr=0.5), {"lr": 0.1}, "Both `lr` .* give a learning rate"),
    (lambda m, o: torch.optim.SGD(m.parameters(), lr=0.5), {"momentum": 0.9}, "set momentum on the optimizer"),
    (lambda m, o: torch.optim.Adam(m.parameters()), {"weight_decay": 0.1}, "set weight_decay on the optimizer"),
])
def test_an_optimizer_instance_that_would_not_train_as_asked_is_refused(data, make, kw, match):
    m, other = el.models.mlp(20), el.models.mlp(20)
    before = m[0].weight.detach().clone()
    with pytest.raises(el.ParameterError, match=match):
        _fit(m, data.train, optimizer=make(m, other), **kw)
    assert torch.equal(m[0].weight, before)


# -- Keras-style arguments -----------------------------------------------------------------

def test_none_one_callback_a_generator_and_one_metric_name_are_accepted(data):
    h = _fit(el.models.mlp(20), data.train, callbacks=None, metrics=None)
    assert "accuracy" not in h.history
    h = _fit(el.models.mlp(20), data.train, metrics="accuracy", epochs=30, lr=0.05,
             validation_split=0.2,
             callbacks=(cb for cb in [el.EarlyStopping(patience=1)]))
    assert "accuracy" in h.history and h.stop_reason == "early_stopping"
    h = _fit(el.models.mlp(20), data.train, callbacks=el.EarlyStopping(monitor="loss"),
             validation_split=np.float32(0.2))
    assert h.n_val == _fit(el.models.mlp(20), data.train, validation_split=0.2).n_val > 0


@pytest.mark.parametrize("kw, match", [
    ({"callbacks": [el.EarlyStopping]}, r"the class EarlyStopping, but must hold instances"),
    ({"callbacks": el.EarlyStopping}, r"the class EarlyStopping, but must hold instances"),
    ({"callbacks": [print]}, "must hold epochlab.callbacks.Callback instances"),
    ({"metrics": [1]}, "must hold metric names"),
])
def test_callbacks_and_metrics_of_the_wrong_kind_are_refused(data, kw, match):
    with pytest.raises(el.ParameterError, match=match):
        _fit(el.models.mlp(20), data.train, **kw)


@pytest.mark.parametrize("cb, split, match", [
    (el.EarlyStopping(monitor="val_accuracy"), 0.0, "no validation metrics"),
    (el.ReduceLROnPlateau(monitor="val_loss"), 0.0, "no validation metrics"),
    (el.EarlyStopping(monitor="val_acc"), 0.2, "Available: loss, accuracy, val_loss"),
])
def test_a_monitored_metric_that_will_not_exist_is_refused_before_training(data, cb, split, match):
    updates = []

    class Count(el.Callback):
        def on_batch_end(self, trainer, logs):
            updates.append(1)

    with pytest.raises(el.ParameterError, match=match):
        _fit(el.models.mlp(20), data.train, callbacks=[cb, Count()], validation_split=split)
    assert updates == []


def test_a_users_callback_before_the_monitor_may_add_the_metric(data):
    class AddF1(el.Callback):
        def on_epoch_end(self, trainer, logs):
            logs["val_f1"] = 0.5

    h = _fit(el.models.mlp(20), data.train, epochs=5, validation_split=0.2,
             callbacks=[AddF1(), el.EarlyStopping(monitor="val_f1", mode="max", patience=1)])
    assert h.stop_reason == "early_stopping"


# -- Datasets --------------------------------------------------------------------------------

@pytest.mark.parametrize("wrap", [TensorDataset, Pairs])
def test_a_dataset_gets_the_checks_arrays_get(data, wrap):
    x = torch.tensor(data.x_train)
    y_reg = x[:, 0] * 2.0
    y_reg[0] = 1.0  # a whole number first: the task is read from more than one row
    h = _fit(el.models.mlp(20), wrap(x, y_reg))
    assert (h.task, h.loss_name) == ("regression", "mse")
    with pytest.raises(el.ParameterError, match=r"values \[1, 2\], not only 0 and 1"):
        _fit(el.models.mlp(20), wrap(x, torch.tensor(data.y_train) + 1))
    with pytest.raises(el.ParameterError, match="labels 0..2 .* out_features=3"):
        _fit(el.models.mlp(20, out_features=2), wrap(x, torch.arange(len(x)) % 3))
    x_nan = x.clone()
    x_nan[5] = float("nan")
    with pytest.raises(el.ParameterError, match=r"non-finite values .* rows \[5\]|item 5's x holds non-finite"):
        _fit(el.models.mlp(20), wrap(x_nan, torch.tensor(data.y_train)))


@pytest.mark.parametrize("wrap", [TensorDataset, Pairs])
def test_a_dataset_is_cast_validated_and_evaluated_like_arrays(data, wrap):
    x, y = torch.tensor(data.x_train), torch.tensor(data.y_train)
    h = _fit(el.models.mlp(20), wrap(x.double(), y), validation_data=(data.x_test, data.y_test))
    assert h.stop_reason == "completed" and h.n_val == len(data.x_test)
    h = _fit(el.models.mlp(20), (x, y), validation_data=wrap(x[:50], y[:50]))
    assert h.n_val == 50
    m = el.models.mlp(20)
    assert el.evaluate(m, wrap(x, y)) == el.evaluate(m, (x, y))


def test_a_label_out_of_range_past_the_checked_rows_says_so(data, monkeypatch):
    from epochlab.train import loop

    monkeypatch.setattr(loop, "DATASET_CHECK_ROWS", 4)
    x, y = torch.tensor(data.x_train), torch.tensor(data.y_train) % 2
    y[7] = 5
    with pytest.raises(el.TrainingError, match="labels 0..5 .* out_features=6"):
        _fit(el.models.mlp(20, out_features=2), Pairs(x, y), batch_size=8)


@pytest.mark.parametrize("item, match", [
    (lambda x, y: {"x": x, "y": y}, r"a dict with keys \['x', 'y'\].*return item\['x'\], item\['y'\]"),
    (lambda x, y: (x, y, 1), "a tuple of 3 values"),
])
def test_dataset_items_that_are_not_pairs_are_refused(data, item, match):
    with pytest.raises(el.ParameterError, match=match):
        _fit(el.models.mlp(20), Pairs(torch.tensor(data.x_train), data.y_train, item))


def test_dataset_items_of_python_lists_train(data):
    ds = Pairs(data.x_train, data.y_train, lambda x, y: (x.tolist(), int(y)))
    assert _fit(el.models.mlp(20), ds, validation_split=0.2).stop_reason == "completed"


def test_a_bundle_as_validation_data_is_refused_with_the_split_to_pass(data):
    with pytest.raises(el.ParameterError, match=r"\(d.x_test, d.y_test\)"):
        _fit(el.models.mlp(20), data.train, validation_data=data)


# -- models, inputs, losses --------------------------------------------------------------

def test_inputs_that_require_grad_train(data):
    x = torch.tensor(data.x_train, requires_grad=True)
    assert _fit(el.models.mlp(20), (x, data.y_train)).stop_reason == "completed"


@pytest.mark.parametrize("convert", [lambda m: m.half(), lambda m: m.bfloat16()])
def test_half_precision_parameters_are_refused_with_the_way_to_bf16(data, convert):
    with pytest.raises(el.ParameterError, match=r"model.float\(\).*|precision='bf16'"):
        _fit(convert(el.models.mlp(20)), data.train)


def test_torch_loss_modules_get_their_targets_shaped(data):
    h = _fit(el.models.mlp(20), data.train, loss=torch.nn.BCEWithLogitsLoss())
    assert (h.task, h.loss_name) == ("binary", "BCEWithLogitsLoss") and "accuracy" in h.history
    h = _fit(el.models.mlp(20, out_features=2), data.train, loss=torch.nn.CrossEntropyLoss())
    assert h.task == "multiclass"
    with pytest.raises(el.ParameterError, match=r"labels must lie in 0..0 \(or be ignore_index"):
        _fit(el.models.mlp(20), data.train, loss=torch.nn.CrossEntropyLoss())


def test_what_a_torch_loss_module_takes_is_not_refused(data):
    x = data.x_train
    y = np.arange(len(x)) % 3
    soft = np.eye(3, dtype=np.float32)[y] * 0.8 + 0.2 / 3
    h = _fit(el.models.mlp(20, out_features=3), (x, soft), loss=torch.nn.CrossEntropyLoss())
    assert h.stop_reason == "completed" and "accuracy" not in h.history  # soft targets
    ignored = y.copy()
    ignored[:5] = -100
    h = _fit(el.models.mlp(20, out_features=3), (x, ignored),
             loss=torch.nn.CrossEntropyLoss(ignore_index=-100))
    assert h.stop_reason == "completed"
    smooth = (np.arange(len(x)) % 2) * 0.9 + 0.05
    h = _fit(el.models.mlp(20), (x, smooth), loss=torch.nn.BCEWithLogitsLoss())
    assert h.stop_reason == "completed" and "accuracy" not in h.history

    class Probabilities(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.l = torch.nn.Linear(20, 1)

        def forward(self, x):
            return torch.sigmoid(self.l(x))

    h = _fit(Probabilities(), data.train, loss=torch.nn.BCELoss())
    assert "accuracy" not in h.history  # a logits accuracy would misread probabilities


@pytest.mark.parametrize("y, match", [
    ((np.arange(240) % 3).reshape(-1, 1), r"y.ravel\(\)"),
    ((np.arange(240) % 3) + 1, r"subtract 1 \(`y - 1`\)"),
    (np.eye(3, dtype=np.int64)[np.arange(240) % 3] | np.eye(3, dtype=np.int64)[(np.arange(240) + 1) % 3],
     "multi-label targets: train them with loss='bce'"),
])
def test_label_mistakes_name_the_fix(data, y, match):
    with pytest.raises(el.ParameterError, match=match):
        _fit(el.models.mlp(20, out_features=3), (data.x_train, y))


# -- Ctrl-C ------------------------------------------------------------------------------------

@pytest.mark.parametrize("hook, where", [
    ("on_train_begin", "before the first update"),
    ("on_epoch_end", "after epoch 1,"),
    ("on_batch_end", "in epoch 1,"),
])
def test_ctrl_c_in_any_hook_returns_the_history_saying_where(data, hook, where):
    class Interrupt(el.Callback):
        pass

    def raise_(self, trainer, logs):
        raise KeyboardInterrupt

    setattr(Interrupt, hook, raise_)
    h = _fit(el.models.mlp(20), data.train, epochs=3, callbacks=[Interrupt()])
    assert h.stop_reason == "interrupted" and where in h.stop_message


def test_fit_leaves_the_models_layout_and_mode_as_they_came():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                            torch.nn.Linear(8 * 10 * 10, 2))
    m.eval()
    x, y = torch.randn(64, 3, 12, 12), torch.randint(0, 2, (64,))
    h = el.fit(m, (x, y), epochs=1, batch_size=32, verbose=0, precision="bf16")
    assert h.extra["runtime"]["channels_last"]
    assert m[0].weight.is_contiguous() and not m.training


def test_batch_norm_with_a_last_batch_of_one_row_is_refused_before_training(data):
    x, y = data.x_train[:65], data.y_train[:65]
    with pytest.raises(el.ParameterError, match="leave a last batch of 1 row. Use drop_last=True"):
        _fit(el.models.mlp(20, batch_norm=True), (x, y), batch_size=64)
    assert _fit(el.models.mlp(20, batch_norm=True), (x, y), batch_size=64,
                drop_last=True).total_updates == 1
    with pytest.raises(el.ParameterError, match="batch_size=1 gives it one"):
        _fit(el.models.mlp(20, batch_norm=True), (x, y), batch_size=1)
    with pytest.raises(el.ParameterError, match="Batch size 32 .* leave a last batch of 1 row"):
        el.sweep(lambda: el.models.mlp(20, batch_norm=True), (data.x_train[:65], data.y_train[:65]),
                 epochs=1, batch_size=[5, 32], validation_split=0.0, progress=False)


@pytest.mark.parametrize("last", [torch.nn.Sigmoid(), torch.nn.Softmax(dim=1)])
def test_a_model_ending_in_probabilities_is_warned_about(data, last):
    out = 1 if isinstance(last, torch.nn.Sigmoid) else 2
    m = torch.nn.Sequential(torch.nn.Linear(20, out), last)
    with pytest.warns(UserWarning, match=f"ends in {type(last).__name__}, but fit's loss"):
        _fit(m, data.train)


def test_the_summary_counts_a_partial_last_epoch_apart_from_the_finished_ones(data):
    class Stop(el.Callback):
        def on_batch_end(self, trainer, logs):
            if trainer.state.global_step == 12:
                raise KeyboardInterrupt

    h = _fit(el.models.mlp(20), data.train, epochs=5, callbacks=[Stop()])  # 8 updates an epoch
    assert "epochs run: 1 of 5 (+ 4 update(s) of epoch 2)   total updates: 12" in h.summary()


def test_a_checkpoint_saving_every_epoch_needs_no_monitored_metric(data, tmp_path):
    path = str(tmp_path / "m-{epoch}.pt")
    assert _fit(el.models.mlp(20), data.train, epochs=2,
                callbacks=[el.ModelCheckpoint(path)]).stop_reason == "completed"
    with pytest.raises(el.ParameterError, match="ModelCheckpoint monitors 'val_loss'"):
        _fit(el.models.mlp(20), data.train, callbacks=[el.ModelCheckpoint(path,
                                                                          save_best_only=True)])


def test_batch_norm_over_images_trains_on_a_batch_of_one_row():
    # BatchNorm2d has a value per position: torch trains it on one image, and so does fit.
    torch.manual_seed(0)
    x, y = np.random.default_rng(0).normal(size=(33, 1, 8, 8)).astype(np.float32), np.arange(33) % 3
    for bs in (1, 32):
        m = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 36, 3))
        assert _fit(m, (x, y), batch_size=bs).stop_reason == "completed"


def test_monitoring_bookkeeping_columns_or_a_computed_value_is_allowed(data):
    class Combined(el.EarlyStopping):
        def monitored_value(self, logs):
            return logs["loss"] + logs.get("val_loss", 0.0)

    for cb in (el.EarlyStopping(monitor="updates", mode="max"), Combined(monitor="combo",
                                                                           mode="min")):
        assert _fit(el.models.mlp(20), data.train, epochs=2, callbacks=[cb]).stop_reason in (
            "completed", "early_stopping")
    with pytest.raises(el.ParameterError, match="'mae' measures regression targets"):
        _fit(el.models.mlp(20), data.train, metrics=["mae"])


def test_an_optimizer_instance_keeps_its_built_rate_and_settings_across_fits(data):
    torch.manual_seed(0)
    m = el.models.mlp(20)
    opt = torch.optim.SGD([{"params": m[0].parameters(), "lr": 0.0},  # frozen by its rate
                           {"params": [*m[2].parameters(), *m[4].parameters()]}],
                          lr=0.1, momentum=0.9)
    first = m[0].weight.detach().clone()
    h = _fit(m, data.train, optimizer=opt, schedule=el.schedules.cosine(0.1, 16))
    assert torch.equal(m[0].weight, first) and h.params["momentum"] == 0.9
    h = _fit(m, data.train, optimizer=opt)  # not the cosine's last rate
    assert set(h.iterations["lr"]) == {0.1}
    opt0 = torch.optim.SGD(m.parameters(), lr=0.0)
    with pytest.raises(el.ParameterError, match="has learning rate 0: nothing would train"):
        _fit(m, data.train, optimizer=opt0)


def test_labels_of_one_class_only_are_warned_about_from_python_too(data):
    with pytest.warns(UserWarning, match="hold one class only"):
        _fit(el.models.mlp(20), (data.x_train, np.zeros(len(data.x_train), dtype=int)))


def test_a_rate_the_user_sets_on_an_instance_between_fits_is_the_one_trained_with(data):
    torch.manual_seed(0)
    m = el.models.mlp(20)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    _fit(m, data.train, optimizer=opt, schedule=el.schedules.cosine(0.1, 16))
    assert set(_fit(m, data.train, optimizer=opt).iterations["lr"]) == {0.1}  # not the cosine's
    for group in opt.param_groups:
        group["lr"] = 0.001  # by hand
    assert set(_fit(m, data.train, optimizer=opt).iterations["lr"]) == {0.001}
    step = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    opt.step()
    step.step()  # a torch scheduler moved it to 0.0005
    assert set(_fit(m, data.train, optimizer=opt).iterations["lr"]) == {0.0005}
    two = torch.optim.SGD([{"params": m[0].parameters(), "lr": 1e-3},
                           {"params": [*m[2].parameters(), *m[4].parameters()], "lr": 1e-2}])
    assert _fit(m, data.train, optimizer=two, lr=1e-3).params["lr"] == 1e-3  # the first group's


def test_torch_losses_refuse_a_broadcast_and_nll_takes_one_hot(data):
    x = data.x_train.astype(np.float32)
    with pytest.raises(el.ParameterError, match="MSELoss would broadcast them"):
        _fit(torch.nn.Linear(20, 3), (x, x[:, :2]), loss=torch.nn.MSELoss())
    flat = torch.nn.Sequential(torch.nn.Linear(20, 1), torch.nn.Flatten(0))
    assert _fit(flat, (x, x[:, :1]), loss=torch.nn.MSELoss()).stop_reason == "completed"
    one_hot = np.eye(2, dtype=np.float32)[data.y_train]
    nll = torch.nn.Sequential(torch.nn.Linear(20, 2), torch.nn.LogSoftmax(1))
    h = _fit(nll, (x, one_hot), loss=torch.nn.NLLLoss())
    assert h.stop_reason == "completed" and h.task == "multiclass"


@pytest.mark.parametrize("shuffle", [True, False])
def test_a_model_writing_into_its_input_leaves_the_users_arrays_alone(shuffle):
    # An in-place first layer wrote into X through the probes, the unshuffled batches and
    # validation_data: the user's arrays changed and the validation loss drifted.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    xv, yv = x[:50].copy(), y[:50]
    x0, xv0 = x.copy(), xv.copy()

    def run(inplace: bool):
        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.LeakyReLU(0.1, inplace=inplace), torch.nn.Linear(6, 2))
        h = el.fit(m, (x, y), validation_data=(xv, yv), epochs=3, batch_size=32, verbose=0,
                   shuffle=shuffle)
        return h, el.evaluate(m, (xv, yv))

    h, got = run(True)
    assert np.array_equal(x, x0) and np.array_equal(xv, xv0)
    ref, want = run(False)
    assert h.history["val_loss"] == ref.history["val_loss"] and got == want
