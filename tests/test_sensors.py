"""Sensor layer: determinism, lag, quantisation and each fault kind."""

import math

import pytest

from thermopilot.hil.sensors import Sensor


def test_same_seed_same_readings():
    a, b = Sensor.ntc(seed=5), Sensor.ntc(seed=5)
    ra = [a.read(300.0, 0.1 * i) for i in range(50)]
    rb = [b.read(300.0, 0.1 * i) for i in range(50)]
    assert ra == rb
    c = Sensor.ntc(seed=6)
    assert [c.read(300.0, 0.1 * i) for i in range(50)] != ra


def test_lag_is_first_order():
    s = Sensor(lag_s=2.0)
    s.read(300.0, 0.0)
    v = s.read(310.0, 2.0)  # one time constant after a 10 K step
    assert v == pytest.approx(300.0 + 10.0 * (1 - math.exp(-1.0)), abs=1e-9)


def test_quantisation_and_clipping():
    s = Sensor(quant=0.5, lo=0.0, hi=10.0)
    assert s.read(3.26, 0.0) == 3.5
    assert s.read(12.0, 1.0) == 10.0


def test_noise_has_the_stated_spread():
    s = Sensor(noise=0.2, seed=1)
    vals = [s.read(1.0, float(i)) for i in range(4000)]
    mean = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))
    assert mean == pytest.approx(1.0, abs=0.02)
    assert sd == pytest.approx(0.2, rel=0.08)


def test_open_and_short_ntc_read_out_of_range():
    s = Sensor.ntc()
    s.read(300.0, 0.0)
    s.inject("open")
    assert s.read(300.0, 0.1) < 273.15 - 40.0
    s.inject("short")
    assert s.read(300.0, 0.2) > 273.15 + 150.0
    s.clear()
    assert 290.0 < s.read(300.0, 0.3) < 310.0


def test_pressure_open_and_short():
    s = Sensor.pressure(full_scale_pa=45e5)
    s.inject("open")
    assert s.read(5e5, 0.0) < 0.0
    s.inject("short")
    assert s.read(5e5, 0.1) > 45e5


def test_stuck_drift_delayed():
    s = Sensor()
    s.read(1.0, 0.0)
    s.inject("stuck")
    assert s.read(5.0, 1.0) == 1.0
    s.clear()
    s.inject("drift", rate_per_s=0.5)
    assert s.read(2.0, 10.0) == pytest.approx(2.0)
    assert s.read(2.0, 14.0) == pytest.approx(4.0)
    s.clear()
    s.inject("delayed", delay_s=1.0)
    got = [s.read(float(k), 20.0 + 0.1 * k) for k in range(40)]
    # After the buffer fills, the reading is the true value of 1 s (10 samples) earlier.
    assert got[-1] == pytest.approx(29.0)


def test_bad_fault_and_bad_input():
    s = Sensor()
    with pytest.raises(ValueError, match="unknown sensor fault"):
        s.inject("melted")
    with pytest.raises(ValueError, match="rate_per_s"):
        s.inject("drift", speed=1)
    with pytest.raises(ValueError, match="not finite"):
        s.read(float("nan"), 0.0)
    with pytest.raises(ValueError, match="noise"):
        Sensor(noise=-1)
