"""The search space: parsing, checking, the product of the lists and canonical run keys."""

from __future__ import annotations

import json

import pytest

from epochlab.sweeps.spec import SweepSpec, canonical_schedule, parse_cli_lists
from epochlab.validation import ParameterError


def test_product_of_lists_is_the_set_of_configurations():
    spec = SweepSpec(epochs=[5, 10, 15], batch_size=[32, 64, 128])
    configs = spec.configs()
    assert len(configs) == 9
    assert {(c.epochs, c.batch_size) for c in configs} == {
        (e, b) for e in (5, 10, 15) for b in (32, 64, 128)}
    assert len({c.key for c in configs}) == 9
    assert spec.swept() == ["epochs", "batch_size"]


def test_key_is_sorted_json_of_all_settings_and_stable():
    c = SweepSpec(data="digits", model="cnn_small", lr=[1e-3]).configs()[0]
    d = json.loads(c.key)
    assert list(d) == sorted(d)
    assert d["data"] == "digits" and d["lr"] == 0.001 and d["early_stopping"] is None
    again = SweepSpec.from_cli(data="digits", model="cnn_small", lr="1e-3").configs()[0]
    assert again.key == c.key


def test_two_spellings_of_one_schedule_give_one_key():
    a = SweepSpec(schedule="step_decay:every_epochs=10,factor=0.5").configs()[0]
    b = SweepSpec(schedule="step:factor=0.5,every_epochs=10").configs()[0]
    assert a.key == b.key
    assert canonical_schedule("none") is None
    assert canonical_schedule("constant") == "constant"


def test_cli_lists_parse_to_typed_values():
    spec = SweepSpec.from_cli(epochs="5,10,15", batch_size="32, 64", lr="1e-3,1e-2",
                              batch_norm="on,off", seed="0,1")
    assert spec.epochs == (5, 10, 15) and spec.batch_size == (32, 64)
    assert spec.lr == (0.001, 0.01) and spec.batch_norm == (True, False)
    assert len(spec.configs()) == 3 * 2 * 2 * 2 * 2


@pytest.mark.parametrize(("texts", "message"), [
    ({"epochs": "5,x"}, "`epochs` is '5,x': 'x' is not an integer"),
    ({"lr": "1e-3,fast"}, "'fast' is not a number"),
    ({"epochs": "0,5"}, "`epochs` is 0, but must be an integer `epochs >= 1`"),
    ({"batch_size": "32,32"}, "given twice in `batch_size`"),
    ({"batch_norm": "maybe"}, "`batch_norm` is 'maybe', but must be on or off"),
    ({"optimizer": "adagrad"}, "`optimizer` is 'adagrad', but must be one of adam"),
    ({"lr": "0"}, "`lr` is 0.0, but must be a finite number `lr > 0`"),
])
def test_bad_cli_values_name_the_setting_and_the_rule(texts, message):
    with pytest.raises(ValueError) as info:
        SweepSpec.from_cli(**texts)
    assert message in str(info.value)


def test_fixed_settings_are_checked():
    with pytest.raises(ValueError, match="validation_split"):
        SweepSpec(validation_split=1.0)
    with pytest.raises(ValueError, match="`mode` is 'up'"):
        SweepSpec(mode="up")
    with pytest.raises(ValueError, match="patience"):
        SweepSpec(early_stopping="val_loss:patience=x")
    with pytest.raises(ValueError, match="Unknown schedule|unknown|must be"):
        SweepSpec(schedule="wobbly")


def test_toml_file_with_cli_overrides(tmp_path):
    p = tmp_path / "spec.toml"
    p.write_text('name = "s13"\ndata = "digits"\nmodel = "cnn_small"\nepochs = [5, 10, 15]\n'
                 'batch_size = [32, 64, 128]\nschedule = ["none", "step:factor=0.5,every_epochs=5"]\n'
                 '[data_options]\nupsample = false\n')
    spec = SweepSpec.from_toml(p, batch_size=[16])
    assert spec.name == "s13" and spec.batch_size == (16,)
    assert spec.schedule == (None, "step:factor=0.5,every_epochs=5")
    assert spec.data_options == {"upsample": False}
    p.write_text("epochz = [1]\n")
    with pytest.raises(ValueError, match=r"Unknown sweep setting\(s\) 'epochz' \(did you mean "
                                         r"'epochs' for 'epochz'\?\)"):
        SweepSpec.from_toml(p)
    p.write_text("epochs = [1\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        SweepSpec.from_toml(p)


def test_generated_study_name_depends_on_the_spec_only():
    a, b = SweepSpec(epochs=[1, 2]), SweepSpec(epochs=[1, 2])
    assert a.study_name() == b.study_name() != SweepSpec(epochs=[1, 3]).study_name()
    assert SweepSpec(name="mine").study_name() == "mine"
    assert SweepSpec.from_dict(a.to_dict()) == a


def test_schedule_texts_pass_through_cli_parsing_whole():
    out = parse_cli_lists({"schedule": ("step:factor=0.5,every_epochs=5",)})
    assert out == {"schedule": ["step:factor=0.5,every_epochs=5"]}


def test_none_and_constant_schedules_together_are_one_training_twice():
    with pytest.raises(ParameterError, match="both 'none' and 'constant', which train the same"):
        SweepSpec(schedule=["none", "constant"])
