import pytest

from hybrid_encoders.regularization.scheduled_float import ScheduledFloat, whitening_schedule


def test_piecewise_linear_values_and_clamping():
    schedule = ScheduledFloat((0.0, 0.2), (4000.0, 0.05), (16000.0, 0.0), default=0.7).train()
    expected = {-5.0: 0.2, 0.0: 0.2, 1000.0: 0.2 - 0.15 * 0.25, 4000.0: 0.05, 10000.0: 0.025, 16000.0: 0.0, 1e6: 0.0}
    for count, value in expected.items():
        schedule.batch_count = count
        assert float(schedule) == pytest.approx(value)


def test_default_in_eval_and_before_any_batch_count():
    schedule = ScheduledFloat((0.0, 0.5), (10.0, 1.0), default=0.25).train()
    assert float(schedule) == 0.25  # batch_count unset
    schedule.batch_count = 5.0
    assert float(schedule) == pytest.approx(0.75)
    assert float(schedule.eval()) == 0.25


def test_whitening_schedule_and_validation():
    schedule = whitening_schedule(5.0, ratio=3.0).train()
    schedule.batch_count = 10000.0
    assert float(schedule) == pytest.approx(10.0)
    with pytest.raises(ValueError, match="increase"):
        ScheduledFloat((10.0, 1.0), (5.0, 2.0))
