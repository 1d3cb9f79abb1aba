"""Plant models for the HIL rig. Each plant: ``step(dt_s, inputs) -> outputs`` in SI units.

``PLANTS`` maps a plant name to its class; :func:`make_plant` builds one by name. Parameters,
their sources and validity ranges are documented in docs/plants.md and in each class's
``PARAMS`` table (``name -> (default, unit, source)``); ``INPUTS`` lists the inputs and
``CHANGEABLE`` (``name -> (unit, low, high, doc)``) the parameters a scenario may change while
the plant runs with ``plant.set_param(name, value)`` (leaks, fouling, failed pumps).

Importing this package does not import CoolProp: the heat pump and the chip cooler build (or
load from the disk cache) their property tables when they are constructed.
"""

from .battery_loop import BatteryCoolantLoop
from .chip_cooler import TwoPhaseChipCooler
from .heatpump_r290 import R290HeatPump

PLANTS = {
    "battery_loop": BatteryCoolantLoop,
    "heatpump_r290": R290HeatPump,
    "chip_cooler": TwoPhaseChipCooler,
}

__all__ = ["PLANTS", "BatteryCoolantLoop", "R290HeatPump", "TwoPhaseChipCooler", "make_plant"]


def make_plant(name, **params):
    """Build the plant registered as ``name`` with parameter overrides ``params``.

    Raises
    ------
    ValueError
        If ``name`` is not registered (the message lists the registered names) or a parameter
        is unknown (the message lists the plant's parameters).
    """
    try:
        cls = PLANTS[name]
    except KeyError:
        raise ValueError(
            "unknown plant %r; expected one of: %s" % (name, ", ".join(sorted(PLANTS)))
        ) from None
    return cls(**params)
