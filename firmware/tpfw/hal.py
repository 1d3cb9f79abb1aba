# Hardware abstraction: sensors in SI units (K, Pa) and actuator outputs (0..1).
# MachineHal drives real pins; HilHal takes sensor values from HIL frames and only records
# the outputs. The app switches to HilHal when the first HIL frame arrives.
import math
from array import array

from micropython import const

_MAX_SENSORS = const(8)
_MAX_ACTUATORS = const(4)


class HilHal:
    def __init__(self, n_sensors, n_actuators):
        self.values = array("f", [0.0] * _MAX_SENSORS)
        self.valid = 0
        self.outputs = array("f", [0.0] * _MAX_ACTUATORS)
        self.n_sensors = n_sensors
        self.n_actuators = n_actuators

    def read(self, i):
        # an invalid channel reads as NaN, which the supervisor treats as a sensor fault
        if self.valid & (1 << i):
            return self.values[i]
        return math.nan

    def write(self, i, value):
        self.outputs[i] = value


class MachineHal:
    """NTC thermistors on ADC pins (beta equation) and PWM outputs."""

    def __init__(self, sensors, actuators):
        from machine import ADC, PWM, Pin

        self.sensors = sensors
        self.adcs = [ADC(Pin(s["pin"])) for s in sensors]
        self.pwms = []
        for a in actuators:
            p = PWM(Pin(a["pin"]))
            p.freq(a.get("freq_hz", 1000))
            self.pwms.append(p)
        self.outputs = array("f", [0.0] * _MAX_ACTUATORS)
        self.n_sensors = len(sensors)
        self.n_actuators = len(actuators)

    def read(self, i):
        s = self.sensors[i]
        x = self.adcs[i].read_u16() / 65535.0
        if x <= 0.0:
            return math.inf  # shorted NTC: resistance zero reads as very hot
        if x >= 1.0:
            return 0.0  # open NTC: infinite resistance reads as very cold
        r = s.get("r_series_ohm", 10000.0) * x / (1.0 - x)
        inv_t = 1.0 / s.get("t0_k", 298.15) + math.log(r / s.get("r0_ohm", 10000.0)) / s.get(
            "beta", 3950.0
        )
        return 1.0 / inv_t

    def write(self, i, value):
        self.outputs[i] = value
        self.pwms[i].duty_u16(int(value * 65535))
