"""Temperature as a buffer, set across a model or annealed on a schedule."""

import pytest
from torch import nn

from dynattn import AttnSpec, DynamicConv2d, SpecError, TemperatureSchedule, build, set_temperature
from dynattn.temperature import temperature_buffers


def _model():
    return nn.Sequential(
        DynamicConv2d(3, 8, 3, padding=1, spec=AttnSpec.dyconv(temperature=30)),
        build(AttnSpec(target="spatial", gate="softmax", temperature=2.0), channels=8),
        DynamicConv2d(8, 8, 3, padding=1, spec=AttnSpec.odconv()),
    )


def test_set_temperature_reaches_every_dynattn_module():
    model = _model()
    assert set(temperature_buffers(model)) == {"0.router.temperature", "1.temperature", "2.router.temperature"}
    assert set_temperature(model, 4.0) == 3
    assert all(float(t) == 4.0 for t in temperature_buffers(model).values())
    assert model[0].temperature == 4.0
    with pytest.raises(SpecError, match="temperature=0"):
        set_temperature(model, 0)


def test_schedule_anneals_linearly_then_holds_and_resumes():
    model = _model()
    sched = TemperatureSchedule(model, start=30, end=1, steps=10)
    assert model[0].temperature == 30.0
    values = [sched.step() for _ in range(12)]
    assert values[0] == pytest.approx(27.1) and values[9] == values[11] == 1.0
    state = sched.state_dict()
    fresh = _model()
    again = TemperatureSchedule(fresh, start=30, end=1, steps=10)
    again.load_state_dict(state)
    assert fresh[2].temperature == 1.0 and again.count == 12


def test_temperature_is_saved_with_the_model():
    model = _model()
    set_temperature(model, 7.0)
    other = _model()
    other.load_state_dict(model.state_dict())
    assert other[0].temperature == 7.0


def test_schedule_errors():
    with pytest.raises(SpecError, match="steps=0"):
        TemperatureSchedule(_model(), steps=0)
    with pytest.raises(SpecError, match="has no dynattn module with a temperature"):
        TemperatureSchedule(nn.Conv2d(3, 3, 3))
