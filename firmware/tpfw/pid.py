# PID controller for the board: MicroPython implementation of the C core's PID step.
# Time is passed in (dt_s); the controller never reads a clock.


class PID:
    def __init__(self, kp, ki, kd, out_min=0.0, out_max=1.0, reverse=False):
        self.kp = kp
        self.ki = ki
        self.kd = kd
        self.out_min = out_min
        self.out_max = out_max
        self.reverse = reverse
        self.auto = True
        self.reset()

    def reset(self):
        self.p = 0.0
        self.i = 0.0
        self.d = 0.0
        self.output = self.out_min
        self._last_meas = None

    def set_auto(self, auto, output=None):
        if output is not None:
            self.output = output
        if auto and not self.auto:
            # bumpless: the integrator takes over the last output
            self.i = self.output - self.p
            self._last_meas = None
        self.auto = auto

    def update(self, setpoint, measurement, dt_s, ff=0.0):
        if not self.auto:
            return self.output
        err = setpoint - measurement
        if self.reverse:
            err = -err
        self.p = self.kp * err
        if self._last_meas is None or dt_s <= 0.0:
            self.d = 0.0
        else:
            dm = measurement - self._last_meas
            self.d = (self.kd * dm / dt_s) if self.reverse else (-self.kd * dm / dt_s)
        self._last_meas = measurement
        self.i += self.ki * err * dt_s
        out = self.p + self.i + self.d + ff
        # anti-windup by clamping: the integrator stops where the output saturates
        if out > self.out_max:
            self.i -= out - self.out_max
            out = self.out_max
        elif out < self.out_min:
            self.i += self.out_min - out
            out = self.out_min
        self.output = out
        return out
