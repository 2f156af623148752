"""Tests of epochlab.schedules: exact values, torch equivalence, configs, parsing, errors."""

from __future__ import annotations

import json
import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from epochlab import schedules as S  # noqa: E402
from epochlab.schedules import (  # noqa: E402
    NAMES,
    Schedule,
    constant,
    cosine,
    exponential_decay,
    from_config,
    linear_warmup,
    one_cycle,
    parse,
    step_decay,
)

# One bound instance of every schedule, with non-default parameters.
EVERY_SCHEDULE = [
    constant(0.01),
    exponential_decay(0.1, decay_steps=1000, decay_rate=0.96, staircase=True),
    exponential_decay(0.2, decay_steps=7, decay_rate=0.5),
    step_decay(0.1, factor=0.3, every_epochs=4),
    cosine(0.1, total_steps=200, warmup_steps=20, min_lr=1e-4),
    linear_warmup(0.05, warmup_steps=30),
    one_cycle(0.4, total_steps=300, pct_start=0.25, div_factor=10.0, final_div_factor=100.0),
]
# And every schedule with its learning rate (and total, where needed) left to fit.
EVERY_UNBOUND = [
    constant(),
    exponential_decay(),
    step_decay(),
    cosine(),
    linear_warmup(),
    one_cycle(),
]


def _ids(schedules: list[Schedule]) -> list[str]:
    return [repr(s) for s in schedules]


def _torch_lrs(make_scheduler, base_lr: float, steps: int) -> list[float]:
    """The lr torch uses for updates 1..steps: read before each optimizer step."""
    param = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([param], lr=base_lr, momentum=0.9)
    scheduler = make_scheduler(optimizer)
    lrs = []
    for i in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if i < steps - 1:  # OneCycleLR refuses to step past total_steps
            scheduler.step()
    return lrs


# -- values at known steps ---------------------------------------------------------------------


def test_exponential_staircase_matches_seed_slide_8_exactly():
    s = exponential_decay(0.1, decay_steps=1000, decay_rate=0.96, staircase=True)
    assert s(0) == 0.1
    assert s(999) == 0.1
    assert s(1000) == 0.1 * 0.96
    assert s(1000) == pytest.approx(0.096, abs=0, rel=1e-15)
    assert s(2500) == 0.1 * 0.96**2


def test_exponential_without_staircase_follows_keras_formula():
    s = exponential_decay(0.1, decay_steps=1000, decay_rate=0.96)
    for step in (0, 1, 500, 999, 1000, 2500, 12345):
        assert s(step) == pytest.approx(0.1 * 0.96 ** (step / 1000), rel=1e-15)
    assert s(500) < s(0) and s(1500) < s(1000)  # it decays between the stairs, too


def test_constant_is_constant_over_steps_and_epochs():
    s = constant(0.03)
    assert {s(step, epoch) for step, epoch in [(0, 0), (10, 1), (10**6, 500)]} == {0.03}


def test_step_decay_drops_once_every_n_epochs_regardless_of_step():
    s = step_decay(0.1, factor=0.5, every_epochs=3)
    by_epoch = [s(0, epoch) for epoch in range(9)]
    assert by_epoch == [0.1] * 3 + [0.05] * 3 + [0.025] * 3
    assert s(10**6, 2) == 0.1  # the step does not matter, only the epoch
    assert S.StepDecay.uses_epoch


def test_linear_warmup_ramps_without_a_zero_step_then_holds():
    s = linear_warmup(0.1, warmup_steps=4)
    assert [s(i) for i in range(4)] == pytest.approx([0.02, 0.04, 0.06, 0.08], rel=1e-15)
    assert s(4) == s(5) == s(10**6) == 0.1
    assert linear_warmup(0.1, warmup_steps=0)(0) == 0.1


def test_cosine_with_warmup_equals_its_closed_form():
    initial, total, warmup, min_lr = 0.1, 100, 10, 0.001
    s = cosine(initial, total_steps=total, warmup_steps=warmup, min_lr=min_lr)
    for step in range(total + 5):
        if step < warmup:
            expected = min_lr + (initial - min_lr) * (step + 1) / (warmup + 1)
        elif step < total:
            progress = (step - warmup) / (total - warmup)
            expected = min_lr + (initial - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
        else:
            expected = min_lr
        assert s(step) == pytest.approx(expected, rel=1e-14, abs=0), step


def test_cosine_warmup_starts_above_min_lr_and_peaks_at_initial():
    s = cosine(0.1, total_steps=50, warmup_steps=5, min_lr=0.01)
    lrs = s.values(60)
    assert lrs[0] == pytest.approx(0.01 + 0.09 / 6)  # the first update is not spent at min_lr
    assert np.all(np.diff(lrs[:6]) > 0)
    assert lrs[5] == 0.1 == lrs.max()
    assert lrs.min() == 0.01  # min_lr is a floor, reached at total_steps
    assert np.all(lrs[50:] == 0.01)  # clamped after total_steps, not periodic


@pytest.mark.parametrize("total, min_lr", [(1, 0.0), (7, 0.0), (50, 1e-3), (333, 0.02)])
def test_cosine_without_warmup_equals_torch_cosine_annealing(total, min_lr):
    s = cosine(0.1, total_steps=total, min_lr=min_lr)
    expected = _torch_lrs(
        lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=min_lr),
        0.1,
        total + 1,
    )
    np.testing.assert_allclose(s.values(total + 1), expected, rtol=0, atol=1e-12)


def test_cosine_warmup_may_fill_the_whole_run():
    s = cosine(0.1, total_steps=10, warmup_steps=10)
    assert s(9) == pytest.approx(0.1 * 10 / 11)
    assert s(10) == 0.0


@pytest.mark.parametrize(
    "total, pct_start, div_factor, final_div_factor",
    [
        (1000, 0.3, 25.0, 1e4),
        (100, 0.25, 10.0, 100.0),
        (37, 0.5, 25.0, 1e4),
        (7, 0.3, 5.0, 1e3),
        (3, 0.3, 25.0, 1e4),
        (2, 0.3, 25.0, 1e4),
        (1, 0.3, 25.0, 1e4),
        (50, 0.0, 25.0, 1e4),
        (50, 1.0, 25.0, 1e4),
        (64, 0.95, 2.0, 1.0),
    ],
)
def test_one_cycle_equals_torch_onecyclelr_at_every_step(
    total, pct_start, div_factor, final_div_factor
):
    max_lr = 0.3
    s = one_cycle(max_lr, total, pct_start, div_factor, final_div_factor)
    expected = _torch_lrs(
        lambda opt: torch.optim.lr_scheduler.OneCycleLR(
            opt,
            max_lr=max_lr,
            total_steps=total,
            pct_start=pct_start,
            div_factor=div_factor,
            final_div_factor=final_div_factor,
            anneal_strategy="cos",
            three_phase=False,
        ),
        max_lr,
        total,
    )
    np.testing.assert_allclose(s.values(total), expected, rtol=0, atol=1e-12)


def test_one_cycle_holds_its_final_value_after_the_cycle():
    s = one_cycle(0.1, total_steps=20)
    assert s(19) == s(20) == s(10**6) == 0.1 / 25 / 1e4


def test_one_cycle_where_torch_divides_by_zero_starts_at_the_peak():
    # pct_start * total_steps == 1 ends torch's rise at step 0, where it computes 0 / 0:
    # the rise is empty, so step 0 is the peak and the fall follows torch's formula.
    s = one_cycle(1.0, total_steps=10, pct_start=0.1)
    lrs = s.values(10)
    assert lrs[0] == 1.0
    fall = [1e-4 / 25 + (1.0 - 1e-4 / 25) / 2 * (math.cos(math.pi * k / 9) + 1) for k in range(10)]
    np.testing.assert_allclose(lrs, fall, rtol=0, atol=1e-15)
    assert one_cycle(1.0, total_steps=1, pct_start=1.0)(0) == 1.0  # 0 / 0 in both phases


def test_schedules_are_pure_so_evaluation_order_does_not_matter():
    for s in EVERY_SCHEDULE:
        forward = [s(i, i // 13) for i in range(400)]
        backward = [s(i, i // 13) for i in reversed(range(400))][::-1]
        assert forward == backward, s


# -- flags and binding -------------------------------------------------------------------------


def test_only_cosine_and_one_cycle_depend_on_the_total_length():
    flags = {type(s).name: s.depends_on_total for s in EVERY_UNBOUND}
    assert flags == {
        "constant": False,
        "exponential": False,
        "step": False,
        "cosine": True,
        "warmup": False,
        "one_cycle": True,
    }


@pytest.mark.parametrize("make", [cosine, one_cycle])
def test_calling_without_total_steps_says_how_to_bind_it(make):
    s = make(0.1)
    with pytest.raises(ValueError, match="total_steps") as info:
        s(0)
    assert "with_total_steps" in str(info.value) and "epochs * iterations_per_epoch" in str(
        info.value
    )
    bound = s.with_total_steps(100)
    assert bound.total_steps == 100 and s.total_steps is None  # a copy; the original is unchanged
    assert bound(0) > 0
    with pytest.raises(ValueError, match="total_steps"):
        s.values(3)


def test_with_total_steps_keeps_an_explicit_total_and_ignores_schedules_without_one():
    explicit = cosine(0.1, total_steps=50)
    assert explicit.with_total_steps(100) is explicit
    flat = exponential_decay(0.1)
    assert flat.with_total_steps(100) is flat
    with pytest.raises(ValueError, match="`total_steps >= 1`"):
        cosine(0.1).with_total_steps(0)


def test_binding_a_total_shorter_than_the_warmup_is_refused():
    with pytest.raises(ValueError, match="`warmup_steps <= total_steps`"):
        cosine(0.1, warmup_steps=200).with_total_steps(100)


@pytest.mark.parametrize("s", EVERY_UNBOUND, ids=_ids(EVERY_UNBOUND))
def test_calling_without_an_initial_lr_says_how_to_fill_it(s):
    with pytest.raises(ValueError, match="with_initial") as info:
        s.with_total_steps(100)(0)
    assert "None" in str(info.value)
    filled = s.with_initial(0.2).with_total_steps(100)
    assert 0 < filled(0, 0) <= 0.2


def test_with_initial_does_not_override_a_given_rate():
    s = exponential_decay(0.1)
    assert s.with_initial(0.5) is s
    assert one_cycle(total_steps=10).with_initial(0.5).max_lr == 0.5
    with pytest.raises(ValueError, match="`lr > 0`"):
        constant().with_initial(-1.0)


# -- configs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "s", EVERY_SCHEDULE + EVERY_UNBOUND, ids=_ids(EVERY_SCHEDULE + EVERY_UNBOUND)
)
def test_config_round_trips_through_json(s):
    config = s.to_config()
    assert config["name"] == type(s).name
    again = from_config(json.loads(json.dumps(config)))
    assert again == s and hash(again) == hash(s) and type(again) is type(s)
    assert again.to_config() == config


@pytest.mark.parametrize("s", EVERY_SCHEDULE, ids=_ids(EVERY_SCHEDULE))
def test_repr_is_the_factory_call_that_rebuilds_it(s):
    assert eval(repr(s), vars(S)) == s


def test_from_config_fills_defaults_and_accepts_aliases():
    assert from_config({"name": "onecycle", "max_lr": 0.1}) == one_cycle(0.1)
    assert from_config({"name": "exponential_decay"}) == exponential_decay()


def test_from_config_errors_name_what_is_wrong():
    with pytest.raises(ValueError, match="'name' key"):
        from_config({"initial": 0.1})
    with pytest.raises(ValueError, match="Valid names: constant"):
        from_config({"name": "linear"})
    with pytest.raises(ValueError, match="Unknown schedule \\['cosine'\\]"):
        from_config({"name": ["cosine"]})
    with pytest.raises(ValueError, match="Valid parameters: initial, factor, every_epochs"):
        from_config({"name": "step", "gamma": 0.1})


def test_schedules_are_immutable():
    s = cosine(0.1, total_steps=10)
    with pytest.raises(AttributeError, match="immutable"):
        s.total_steps = 20
    assert s.total_steps == 10 and s(10) == 0.0


def test_schedules_with_different_parameters_are_not_equal():
    assert cosine(0.1, total_steps=10) != cosine(0.1, total_steps=11)
    assert constant(0.1) != linear_warmup(0.1, warmup_steps=0)  # same values, different schedules


# -- parsing -----------------------------------------------------------------------------------


def test_parse_reads_the_cli_syntax_of_slide_8():
    s = parse("exponential:initial=0.1,decay_steps=1000,decay_rate=0.96,staircase=true")
    assert s == exponential_decay(0.1, decay_steps=1000, decay_rate=0.96, staircase=True)
    assert s(2500) == 0.1 * 0.96**2


@pytest.mark.parametrize(
    "text, expected",
    [
        ("constant", constant()),
        ("constant:lr=1e-3", constant(0.001)),
        ("exponential_decay:decay_steps=1e3", exponential_decay(decay_steps=1000)),
        (" step : factor = 0.1 , every_epochs=30 ", step_decay(factor=0.1, every_epochs=30)),
        ("step_decay:every_epochs=2", step_decay(every_epochs=2)),
        ("cosine:initial=0.1,total_steps=none,warmup_steps=5", cosine(0.1, warmup_steps=5)),
        ("warmup:warmup_steps=10", linear_warmup(warmup_steps=10)),
        ("linear_warmup", linear_warmup()),
        ("one_cycle:max_lr=0.5,total_steps=100,pct_start=0.4", one_cycle(0.5, 100, 0.4)),
        ("ONECYCLE:max_lr=0.5", one_cycle(0.5)),
        ("exponential:staircase=yes", exponential_decay(staircase=True)),
        ("exponential:staircase=No", exponential_decay(staircase=False)),
        ("exponential:staircase=1", exponential_decay(staircase=True)),
        ("exponential:staircase=0", exponential_decay(staircase=False)),
    ],
)
def test_parse_accepts_names_aliases_and_typed_values(text, expected):
    assert parse(text) == expected


def test_names_lists_every_accepted_spelling():
    assert set(NAMES) == {
        "constant", "exponential", "exponential_decay", "step", "step_decay", "cosine",
        "warmup", "linear_warmup", "one_cycle", "onecycle",
    }  # fmt: skip
    for name in NAMES:
        assert isinstance(parse(name), Schedule)


def test_parse_default_lr_fills_only_a_missing_rate():
    assert parse("cosine", default_lr=0.3).initial == 0.3
    assert parse("one_cycle", default_lr=0.3).max_lr == 0.3
    assert parse("constant", default_lr=0.3)(0) == 0.3
    assert parse("exponential:initial=0.1", default_lr=0.3).initial == 0.1


def test_parse_unknown_name_lists_the_valid_names():
    with pytest.raises(ValueError) as info:
        parse("polynomial:power=2")
    message = str(info.value)
    assert "'polynomial'" in message
    for name in NAMES:
        assert name in message


def test_parse_unknown_parameter_lists_that_schedules_parameters():
    with pytest.raises(ValueError) as info:
        parse("exponential:initial=0.1,gamma=0.9")
    message = str(info.value)
    assert "'gamma'" in message and "'exponential'" in message
    assert "Valid parameters: initial, decay_steps, decay_rate, staircase." in message


@pytest.mark.parametrize(
    "text, expected_message",
    [
        ("exponential:decay_steps=0", "The value of `decay_steps` is 0, but must be `decay_steps >= 1`."),
        ("exponential:decay_steps=1.5", "The value of `decay_steps` is 1.5, but must be an integer with `decay_steps >= 1`."),
        ("exponential:decay_steps=many", "The value of `decay_steps` is 'many', but must be an integer with `decay_steps >= 1`."),
        ("exponential:decay_rate=0", "The value of `decay_rate` is 0.0, but must be `decay_rate > 0`."),
        ("exponential:initial=-0.1", "The value of `initial` is -0.1, but must be `initial > 0`."),
        ("exponential:initial=nan", "The value of `initial` is nan, but must be a finite number with `initial > 0`."),
        ("exponential:staircase=maybe", "The value of `staircase` is 'maybe', but must be a boolean (true/false/yes/no/1/0)."),
        ("exponential:decay_rate=none", "The value of `decay_rate` is 'none', but must be a finite number with `decay_rate > 0`."),
        ("constant:lr=-1", "The value of `lr` is -1.0, but must be `lr > 0`."),
        ("exponential:initial=0", "The value of `initial` is 0.0, but must be `initial > 0`."),
        ("one_cycle:max_lr=inf", "The value of `max_lr` is inf, but must be a finite number with `max_lr > 0`."),
        ("step:factor=-0.5", "The value of `factor` is -0.5, but must be `factor > 0`."),
        ("step:every_epochs=0", "The value of `every_epochs` is 0, but must be `every_epochs >= 1`."),
        ("cosine:total_steps=0", "The value of `total_steps` is 0, but must be `total_steps >= 1`."),
        ("cosine:total_steps=100,warmup_steps=101", "The value of `warmup_steps` is 101, but must be `warmup_steps <= total_steps` (total_steps is 100)."),
        ("cosine:initial=0.1,min_lr=0.2", "The value of `min_lr` is 0.2, but must be `min_lr <= initial` (initial is 0.1)."),
        ("warmup:warmup_steps=-1", "The value of `warmup_steps` is -1, but must be `warmup_steps >= 0`."),
        ("one_cycle:pct_start=1.5", "The value of `pct_start` is 1.5, but must be `0 <= pct_start <= 1`."),
        ("one_cycle:div_factor=0", "The value of `div_factor` is 0.0, but must be `div_factor > 0`."),
        ("one_cycle:final_div_factor=-2", "The value of `final_div_factor` is -2.0, but must be `final_div_factor > 0`."),
    ],
)  # fmt: skip
def test_parse_bad_value_names_parameter_range_and_value(text, expected_message):
    with pytest.raises(ValueError) as info:
        parse(text)
    assert str(info.value) == expected_message


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "must be 'name' or 'name:key=value,...'"),
        ("exponential:initial", "expected key=value"),
        ("exponential:initial=0.1,initial=0.2", "given twice"),
    ],
)
def test_parse_malformed_text_says_what_was_expected(text, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse(text)


# -- validation at construction ----------------------------------------------------------------


@pytest.mark.parametrize(
    "build, fragment",
    [
        (lambda: exponential_decay(0.1, decay_steps=True), "`decay_steps` is True"),
        (lambda: exponential_decay(0.1, staircase=1), "`staircase` is 1, but must be a boolean"),
        (lambda: constant(float("inf")), "`lr` is inf"),
        (lambda: constant("0.1"), "`lr` is '0.1', but must be a finite number"),
        (lambda: one_cycle(0.1, total_steps=2.5), "`total_steps` is 2.5"),
        (lambda: cosine(0.1, warmup_steps=None), "`warmup_steps` is None"),
    ],
)
def test_factories_validate_types_at_construction(build, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(")):
        build()


def test_integral_numbers_are_accepted_as_their_type():
    s = exponential_decay(1, decay_steps=np.int64(10), decay_rate=1)
    assert s.decay_steps == 10 and isinstance(s.decay_steps, int)
    assert isinstance(s.initial, float) and isinstance(s(5), float)


# -- values and plot ---------------------------------------------------------------------------


@pytest.mark.parametrize("s", EVERY_SCHEDULE, ids=_ids(EVERY_SCHEDULE))
def test_values_match_calls_with_epochs_from_iterations_per_epoch(s):
    lrs = s.values(250, iterations_per_epoch=16)
    assert lrs.shape == (250,) and lrs.dtype == np.float64
    assert lrs.tolist() == [s(i, i // 16) for i in range(250)]
    assert s.values(0, iterations_per_epoch=16).shape == (0,)


def test_values_of_an_epoch_schedule_need_iterations_per_epoch():
    with pytest.raises(ValueError, match="iterations_per_epoch"):
        step_decay(0.1).values(10)
    with pytest.raises(ValueError, match="`iterations_per_epoch >= 1`"):
        step_decay(0.1).values(10, iterations_per_epoch=0)
    with pytest.raises(ValueError, match="`steps >= 0`"):
        constant(0.1).values(-1)


def test_plot_returns_a_figure_with_one_point_per_iteration():
    s = cosine(0.1, total_steps=120, warmup_steps=12)
    fig = s.plot(120, iterations_per_epoch=12)
    assert isinstance(fig, Figure)
    line = fig.axes[0].lines[0]
    assert len(line.get_xdata()) == 120
    np.testing.assert_array_equal(line.get_ydata(), s.values(120))


def test_plot_draws_on_a_given_axes():
    fig = Figure()
    ax = fig.add_subplot()
    assert exponential_decay(0.1, decay_steps=10).plot(50, ax=ax) is fig
    assert len(ax.lines) == 1
