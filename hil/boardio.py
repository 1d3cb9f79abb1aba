"""The rig's side of the board's sensor front ends: SI value -> the raw signal a board sensor
delivers (an NTC divider's ADC fraction, a pressure transducer's volts, or the SI value itself
for a linear channel), the inverse of ``firmware/tpfw/hal.py`` ``Sensing.decode``.

The HIL rig feeds the board raw signals, so the board converts them with the same code as on
real pins, and a wire break or a short shows up as the board would see it.
"""

import math


def encode(sensor, value):
    """Raw signal of board sensor definition ``sensor`` (a dict from boards/*.json) for the SI
    ``value``."""
    kind = sensor.get("kind", "ntc")
    if kind == "ntc":
        if not (math.isfinite(value) and value > 0.0):
            return 1.0  # no physical temperature: reads as an open NTC
        r0 = sensor.get("r0_ohm", 10000.0)
        t0 = sensor.get("t0_k", 298.15)
        beta = sensor.get("beta", 3950.0)
        rs = sensor.get("r_series_ohm", 10000.0)
        e = beta * (1.0 / value - 1.0 / t0)
        if e > 700.0:
            return 1.0
        r = r0 * math.exp(e)
        return r / (r + rs)
    if kind == "ratiometric":
        v_lo = sensor.get("v_lo", 0.5)
        v_hi = sensor.get("v_hi", 4.5)
        slope = (sensor["p_hi"] - sensor["p_lo"]) / (v_hi - v_lo)
        return v_lo + (value - sensor["p_lo"]) / slope
    if kind == "linear":
        return (value - sensor.get("offset", 0.0)) / sensor.get("scale", 1.0)
    raise ValueError("sensor %r: unknown kind %r" % (sensor.get("name"), kind))


def decode(sensor, raw):
    """SI value the board derives from ``raw`` (the same formulas as the firmware; tests hold
    the two together)."""
    kind = sensor.get("kind", "ntc")
    if kind == "ntc":
        if raw <= 0.0:
            return 1e9
        if raw >= 1.0:
            return 0.0
        ohm = sensor.get("r_series_ohm", 10000.0) * raw / (1.0 - raw)
        inv = 1.0 / sensor.get("t0_k", 298.15) + math.log(
            ohm / sensor.get("r0_ohm", 10000.0)
        ) / sensor.get("beta", 3950.0)
        return 1.0 / inv
    if kind == "ratiometric":
        v_lo = sensor.get("v_lo", 0.5)
        v_hi = sensor.get("v_hi", 4.5)
        slope = (sensor["p_hi"] - sensor["p_lo"]) / (v_hi - v_lo)
        return sensor["p_lo"] + (raw - v_lo) * slope
    return sensor.get("offset", 0.0) + sensor.get("scale", 1.0) * raw
