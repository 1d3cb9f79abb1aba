"""Plant models for the HIL rig. Each plant: ``step(dt_s, inputs) -> outputs`` in SI units."""

from .battery_loop import BatteryCoolantLoop

PLANTS = {"battery_loop": BatteryCoolantLoop}


def make_plant(name, **params):
    """Build the plant registered as ``name`` with parameter overrides ``params``."""
    try:
        cls = PLANTS[name]
    except KeyError:
        raise ValueError(
            "unknown plant %r; expected one of: %s" % (name, ", ".join(sorted(PLANTS)))
        ) from None
    return cls(**params)
