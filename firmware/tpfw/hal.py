# Hardware abstraction. Sensors deliver raw signals (an NTC's ADC fraction, a pressure
# transducer's volts, or a value already in SI units) and the Sensing layer turns them into SI
# values (K, Pa, A, W, L/min) with the same code whether the signal came from a pin
# (MachineHal, in hal_machine.py) or from a HIL frame (HilHal). Actuators take values in their
# own unit (PWM duty
# 0..1, stepper position in steps, compressor speed in rev/s); the app switches to HilHal when
# the HIL rig starts a run.
import math
from array import array

from micropython import const

MAX_SENSORS = const(16)
MAX_ACTUATORS = const(8)

_NTC = const(0)
_RATIO = const(1)
_LINEAR = const(2)
KINDS = ("ntc", "ratiometric", "linear")


class Sensing:
    """Raw signal -> SI value for every sensor of the board definition."""

    def __init__(self, sensors):
        n = len(sensors)
        self.kind = bytearray(n)
        self.a = array("f", [0.0] * n)
        self.b = array("f", [0.0] * n)
        self.c = array("f", [0.0] * n)
        self.d = array("f", [0.0] * n)
        for i in range(n):
            s = sensors[i]
            k = KINDS.index(s["kind"])
            self.kind[i] = k
            if k == _NTC:
                self.a[i] = s.get("r_series_ohm", 10000.0)
                self.b[i] = 1.0 / s.get("t0_k", 298.15)
                self.c[i] = 1.0 / s.get("beta", 3950.0)
                self.d[i] = s.get("r0_ohm", 10000.0)
            elif k == _RATIO:
                self.a[i] = s["p_lo"]
                self.b[i] = s.get("v_lo", 0.5)
                self.c[i] = (s["p_hi"] - s["p_lo"]) / (s.get("v_hi", 4.5) - s.get("v_lo", 0.5))
            else:
                self.a[i] = s.get("offset", 0.0)
                self.c[i] = s.get("scale", 1.0)
        self.n = n

    def decode(self, raw, valid, x):
        """x[i] = SI value of raw[i]; NaN where the valid bit is clear."""
        for i in range(self.n):
            if not valid & (1 << i):
                x[i] = math.nan
                continue
            r = raw[i]
            k = self.kind[i]
            if k == _NTC:
                # NTC on the low side of a divider to the ADC reference: r = Rs * x / (1 - x)
                if r <= 0.0:
                    x[i] = 1e9  # shorted NTC: zero resistance reads as very hot
                elif r >= 1.0:
                    x[i] = 0.0  # open NTC: infinite resistance reads as very cold
                else:
                    ohm = self.a[i] * r / (1.0 - r)
                    x[i] = 1.0 / (self.b[i] + self.c[i] * math.log(ohm / self.d[i]))
            elif k == _RATIO:
                x[i] = self.a[i] + (r - self.b[i]) * self.c[i]
            else:
                x[i] = self.a[i] + self.c[i] * r


class HilHal:
    """Sensors from HIL frames (raw signals), actuator outputs recorded for the answer."""

    def __init__(self, n_sensors, n_actuators):
        self.raw = array("f", [0.0] * MAX_SENSORS)
        self.valid = 0
        self.outputs = array("f", [0.0] * MAX_ACTUATORS)
        self.n_sensors = n_sensors
        self.n_actuators = n_actuators

    def read(self):
        """Refresh self.raw; returns the bitmask of channels that carry a signal."""
        return self.valid

    def write(self, i, value):
        self.outputs[i] = value
