# Sensors on ADC pins, actuators on PWM, step/dir and digital pins (a real board, "hal":
# "machine"). Imported only by boards that have real pins.
from array import array

from .hal import MAX_ACTUATORS, MAX_SENSORS


class MachineHal:
    """Sensors on ADC pins, actuators on PWM, step/dir and digital pins."""

    def __init__(self, sensors, actuators):
        from machine import ADC, PWM, Pin

        self.raw = array("f", [0.0] * MAX_SENSORS)
        self.adcs = [ADC(Pin(s["pin"])) for s in sensors]
        # what one ADC count means: an NTC divider reads its fraction of the reference; a
        # ratiometric transducer reads volts through the board's divider (adc_volts full scale)
        self.scale = array("f", [s.get("adc_volts", 1.0) / 65535.0 for s in sensors])
        self.valid = (1 << len(sensors)) - 1
        self.actuators = actuators
        self.outs = []
        self.pos = array("f", [0.0] * MAX_ACTUATORS)  # stepper positions, steps
        for a in actuators:
            kind = a.get("kind", "pwm")
            if kind == "stepper":
                self.outs.append((Pin(a["step_pin"], Pin.OUT), Pin(a["dir_pin"], Pin.OUT)))
            elif kind == "digital":
                self.outs.append(Pin(a["pin"], Pin.OUT))
            else:
                p = PWM(Pin(a["pin"]))
                p.freq(a.get("freq_hz", 1000))
                self.outs.append(p)
        self.outputs = array("f", [0.0] * MAX_ACTUATORS)
        self.n_sensors = len(sensors)
        self.n_actuators = len(actuators)

    def read(self):
        for i in range(self.n_sensors):
            self.raw[i] = self.adcs[i].read_u16() * self.scale[i]
        return self.valid

    def write(self, i, value):
        self.outputs[i] = value
        a = self.actuators[i]
        kind = a.get("kind", "pwm")
        if kind == "stepper":
            # the controller limits the step rate, so a tick moves a few steps at most
            step, direction = self.outs[i]
            n = int(value) - int(self.pos[i])
            direction.value(1 if n > 0 else 0)
            for _ in range(abs(n)):
                step.value(1)
                step.value(0)
            self.pos[i] = int(value)
        elif kind == "digital":
            self.outs[i].value(1 if value >= 0.5 else 0)
        else:
            lo = a.get("min", 0.0)
            span = a.get("max", 1.0) - lo
            duty = (value - lo) / span if span > 0 else 0.0
            duty = 0.0 if duty < 0.0 else 1.0 if duty > 1.0 else duty
            self.outs[i].duty_u16(int(duty * 65535))
