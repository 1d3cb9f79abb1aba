"""Units at the user's edge: the board speaks SI (K, Pa, fraction 0..1); people read degC,
bar and percent.

Every value the board reports comes with a quantity code (LOOP_INFO, FIELD_INFO,
PARAM_INFO). :func:`display` turns an SI value into the number and unit the CLI shows;
:func:`to_si` turns a number the user typed (with an optional unit) back into SI. A number
typed without a unit is in the unit the CLI shows for that quantity, so what ``param list``
prints can be typed back into ``param set``.
"""

import math

#: the unit each quantity travels in (protocol/schema.py, QUANTITIES)
SI_UNIT = {
    "temperature": "K",
    "temperature_difference": "K",
    "pressure": "Pa",
    "fraction": "",
    "steps": "steps",
    "speed": "rev/s",
    "power": "W",
    "current": "A",
    "flow": "L/min",
    "rate": "1/s",
    "time": "s",
    "voltage": "V",
    "concentration": "ppm",
    "energy": "J",
}

# quantity -> (unit shown, scale, offset): shown = si * scale + offset
_SHOWN = {
    "temperature": ("°C", 1.0, -273.15),
    "temperature_difference": ("K", 1.0, 0.0),
    "pressure": ("bar", 1e-5, 0.0),
    "fraction": ("%", 100.0, 0.0),
}

# units a user may type, per quantity: name -> (scale, offset) as above
_TYPED = {
    "temperature": {
        "°C": (1.0, -273.15),
        "degC": (1.0, -273.15),
        "C": (1.0, -273.15),
        "K": (1.0, 0.0),
    },
    "temperature_difference": {"K": (1.0, 0.0), "degC": (1.0, 0.0), "°C": (1.0, 0.0)},
    "pressure": {"bar": (1e-5, 0.0), "kPa": (1e-3, 0.0), "MPa": (1e-6, 0.0), "Pa": (1.0, 0.0)},
    "fraction": {"%": (100.0, 0.0), "fraction": (1.0, 0.0)},
}


def shown_unit(quantity, board_unit=None):
    """The unit the CLI shows for ``quantity`` (the board's own unit when no convention)."""
    if quantity in _SHOWN:
        return _SHOWN[quantity][0]
    if board_unit is not None:
        return board_unit
    return SI_UNIT.get(quantity, "")


def display(value_si, quantity):
    """An SI value as the number the CLI shows for ``quantity``."""
    if quantity in _SHOWN:
        _, scale, offset = _SHOWN[quantity]
        return value_si * scale + offset
    return value_si


def f32(value):
    """A float32 from the board with the digits it really has (7 significant), so that
    305.15 stored as 305.149994 shows as 32 degC, not 31.99999."""
    if not math.isfinite(value):
        return value
    return float("%.7g" % value)


def display_step(step_si, quantity):
    """A resolution or a difference (no offset) in the shown unit."""
    if quantity in _SHOWN:
        return step_si * _SHOWN[quantity][1]
    return step_si


def units_accepted(quantity, board_unit=None):
    """Unit names :func:`to_si` accepts for ``quantity``."""
    if quantity in _TYPED:
        return list(_TYPED[quantity])
    unit = board_unit if board_unit is not None else SI_UNIT.get(quantity, "")
    return [unit] if unit else []


def to_si(value, quantity, unit=None, board_unit=None):
    """A number the user typed, in ``unit`` (default: the shown unit), as SI.

    Raises ValueError naming the unit and the ones accepted when ``unit`` does not measure
    ``quantity``.
    """
    if unit is None or unit == shown_unit(quantity, board_unit):
        if quantity in _SHOWN:
            _, scale, offset = _SHOWN[quantity]
            return (value - offset) / scale
        return value
    table = _TYPED.get(quantity)
    if table is not None and unit in table:
        scale, offset = table[unit]
        return (value - offset) / scale
    accepted = units_accepted(quantity, board_unit)
    raise ValueError(
        "unit %r does not measure a %s; use %s"
        % (
            unit,
            quantity.replace("_", " ") if quantity != "none" else "plain number",
            " or ".join(repr(u) for u in accepted) if accepted else "no unit",
        )
    )


def decimals(step):
    """Decimal places that show a value to ``step`` (e.g. 0.01 -> 2); 3 when unknown."""
    if not step or not math.isfinite(step) or step <= 0:
        return 3
    return max(0, min(6, -math.floor(math.log10(step) + 1e-6)))


def rounded(value, step):
    """``value`` rounded to a multiple of ``step`` (the sensor's resolution), as text."""
    if not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if not step or step <= 0 or not math.isfinite(step):
        return "%.6g" % value
    q = round(value / step) * step
    return "%.*f" % (decimals(step), q)


def fmt(value_si, quantity, step=None, board_unit=None, unit=True):
    """``value_si`` as shown text with its unit, e.g. ``"32.00 °C"``, ``"10.0 K"``."""
    if value_si is None or (isinstance(value_si, float) and math.isnan(value_si)):
        return "—"
    v = display(value_si, quantity)
    if step:
        text = rounded(v, display_step(step, quantity))
    elif quantity == "fraction":
        text = "%.1f" % v
    else:
        text = "%.4g" % v
    u = shown_unit(quantity, board_unit)
    return "%s %s" % (text, u) if unit and u else text
