# The supervisor has the last word on every actuator: a latched fault drives all actuators to
# their safe values until an explicit fault reset, and every latch is reported as an event.
from array import array

from micropython import const

from . import codec

_EVENTS = const(8)


class Supervisor:
    def __init__(self, safe_outputs):
        self.safe = array("f", safe_outputs)
        self.faults = 0
        # ring of pending events: code, loop, value, t_ms
        self.ev_code = bytearray(_EVENTS)
        self.ev_loop = bytearray(_EVENTS)
        self.ev_value = array("f", [0.0] * _EVENTS)
        self.ev_t = array("I", [0] * _EVENTS)
        self.ev_head = 0
        self.ev_count = 0

    def latch(self, bit, loop, value, t_ms):
        if self.faults & (1 << bit):
            return
        self.faults |= 1 << bit
        if self.ev_count < _EVENTS:
            k = (self.ev_head + self.ev_count) % _EVENTS
            self.ev_code[k] = bit
            self.ev_loop[k] = loop
            self.ev_value[k] = value
            self.ev_t[k] = t_ms
            self.ev_count += 1

    def check_sensor(self, loop, value, lo, hi, t_ms):
        """Latch open/short/implausible for a reading outside [lo, hi]; True when healthy."""
        if value != value:
            self.latch(codec.FAULT_SENSOR_IMPLAUSIBLE, loop, 0.0, t_ms)
            return False
        if value < lo:
            self.latch(codec.FAULT_SENSOR_OPEN, loop, value, t_ms)
            return False
        if value > hi:
            self.latch(codec.FAULT_SENSOR_SHORT, loop, value, t_ms)
            return False
        return True

    def reset(self):
        # conditions still present latch again at the next tick
        self.faults = 0

    def clamp(self, i, value):
        if self.faults:
            return self.safe[i]
        return value
