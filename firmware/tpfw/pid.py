# PID controller for the board, the same maths as firmware/native/tp_pid.c (see there for
# the equations). Time is passed in (dt_s); the controller never reads a clock.
#
# Kind of anti-windup: back-calculation (tracking). After the output is limited, the
# integrator moves by min(dt_s/tt_s, 1) * (applied - unsaturated), where `applied` is the
# limited output or the caller's tracking input (the actuator's real command after the
# safety supervisor). tt_s = 0 (default) resets the integrator in one step.
#
# When the board has the C core (the `tpcore` native module, see core.py), PID runs the C
# step on a preallocated array('f') that mirrors the C struct tp_pid_t; otherwise it runs
# the same step in MicroPython. On MicroPython every float result is a boxed heap object,
# so the pure-Python update allocates about 1 KB per call on the 64-bit VM; through the C core,
# update() allocates only the float it returns, and step(io) on a caller-owned array('f')
# allocates nothing.

from array import array

import micropython
from micropython import const

from .core import tpcore

# field indices of tp_pid_t (firmware/native/tp_pid.h)
_KP = const(0)
_KI = const(1)
_KD = const(2)
_TF = const(3)
_BETA = const(4)
_GAMMA = const(5)
_OMIN = const(6)
_OMAX = const(7)
_RATE = const(8)
_TT = const(9)
_REV = const(10)
_AUTO = const(11)
_MAN = const(12)
_P = const(13)
_I = const(14)
_D = const(15)
_FF = const(16)
_V = const(17)
_OUT = const(18)
_NFLOATS = const(23)
# step(io) buffer: setpoint, measurement, dt_s, ff, track, use_track (!= 0), output
_IO_NFLOATS = const(7)
_BAD_DT = const(1)
_BAD_INPUT = const(2)
_BIG = 1e30


def _clamp(x, lo, hi):
    if x < lo:
        return lo
    if x > hi:
        return hi
    return x


def _check_dt(dt_s):
    if not (0.0 < dt_s < _BIG):
        raise ValueError("dt_s must be > 0 s: %r" % dt_s)


def _check_io(io):
    if len(io) != _IO_NFLOATS:
        raise ValueError("PID io has %d values, expected %d" % (len(io), _IO_NFLOATS))


def _check_limits(out_min, out_max):
    if not (out_min <= out_max):
        raise ValueError("out_min %r must be <= out_max %r" % (out_min, out_max))


class PIDPy:
    """PID step in MicroPython (the fallback when the board has no C module)."""

    def __init__(
        self,
        kp,
        ki,
        kd,
        out_min=0.0,
        out_max=1.0,
        reverse=False,
        tf_s=0.0,
        beta=1.0,
        gamma=0.0,
        rate_max=0.0,
        tt_s=0.0,
    ):
        _check_limits(out_min, out_max)
        self.kp = kp
        self.ki = ki
        self.kd = kd
        self.out_min = out_min
        self.out_max = out_max
        self.reverse = reverse
        self.tf_s = tf_s
        self.beta = beta
        self.gamma = gamma
        self.rate_max = rate_max
        self.tt_s = tt_s
        self.auto = True
        self.manual_output = out_min
        self.reset()

    def reset(self, output=None):
        """Clear the state; the output restarts at `output` (default out_min)."""
        self.p = 0.0
        self.i = 0.0
        self.d = 0.0
        self.ff = 0.0
        self.output = _clamp(
            self.out_min if output is None else output, self.out_min, self.out_max
        )
        self.v = self.output
        self._y_prev = 0.0
        self._r_prev = 0.0
        self._primed = False
        self._resume = False

    def set_auto(self, auto, output=None):
        """Switch auto/manual; `output` (if given) is where the output continues from."""
        if output is not None:
            self.manual_output = output
            self.output = _clamp(output, self.out_min, self.out_max)
            self.i = self.output - self.p - self.d - self.ff
        elif self.auto and not auto:
            self.manual_output = self.output
        if auto and not self.auto:
            self._resume = True  # the next step starts from the held output
        self.auto = bool(auto)

    # native code: best of 6 runs on the unix VM, 163k -> 242k steps/s (floats stay boxed)
    @micropython.native
    def update(self, setpoint, measurement, dt_s, ff=0.0, track=None):
        """One step; returns the output. `track`: the actuator's real command, if known."""
        _check_dt(dt_s)
        if not (-_BIG < setpoint < _BIG and -_BIG < measurement < _BIG and -_BIG < ff < _BIG):
            raise ValueError("setpoint, measurement and ff must be finite")
        if self.reverse:
            r = -setpoint
            y = -measurement
            y_prev = -self._y_prev
            r_prev = -self._r_prev
        else:
            r = setpoint
            y = measurement
            y_prev = self._y_prev
            r_prev = self._r_prev
        e = r - y
        pterm = self.kp * (self.beta * r - y)
        resume = self._resume and self.auto
        if self._primed and not resume:
            den = self.tf_s + dt_s
            g = self.gamma
            dterm = (self.tf_s / den) * self.d - (self.kd / den) * (
                (y - g * r) - (y_prev - g * r_prev)
            )
        else:
            dterm = 0.0
        if resume:
            iterm = self.output - pterm - dterm - ff  # bumpless: v equals the held output
            self._resume = False
        else:
            iterm = self.i + self.ki * e * dt_s
        v = pterm + iterm + dterm + ff
        if self.auto:
            u = v
            rate = self.rate_max
            if rate > 0.0:
                u = _clamp(u, self.output - rate * dt_s, self.output + rate * dt_s)
            u = _clamp(u, self.out_min, self.out_max)
            applied = u if track is None else track
            if self.ki != 0.0:
                ao = dt_s / self.tt_s if self.tt_s > 0.0 else 1.0
                if ao > 1.0:
                    ao = 1.0
                iterm += ao * (applied - v)
            else:
                iterm = self.i
        else:
            u = _clamp(self.manual_output, self.out_min, self.out_max)
            applied = u if track is None else track
            iterm = applied - pterm - dterm - ff
        self.p = pterm
        self.i = iterm
        self.d = dterm
        self.ff = ff
        self.v = v
        self.output = u
        self._y_prev = measurement
        self._r_prev = setpoint
        self._primed = True
        return u

    def step(self, io):
        """One step on io = [setpoint, measurement, dt_s, ff, track, use_track, output]
        (array('f', 7), made once by the caller); writes the output to io[6] and returns 0,
        or 1 (bad dt_s) or 2 (non-finite input) with nothing changed."""
        _check_io(io)
        dt_s = io[2]
        if not (0.0 < dt_s < _BIG):
            return _BAD_DT
        use_track = io[5] != 0.0
        for k in (0, 1, 3, 4) if use_track else (0, 1, 3):
            if not (-_BIG < io[k] < _BIG):
                return _BAD_INPUT
        io[6] = self.update(io[0], io[1], dt_s, io[3], io[4] if use_track else None)
        return 0


def _field(index):
    def get(self):
        return self._buf[index]

    def put(self, value):
        self._buf[index] = value

    return property(get, put)


class PIDNative:
    """PID step in the C core `tpcore`; state lives in an array('f') laid out as tp_pid_t."""

    kp = _field(_KP)
    ki = _field(_KI)
    kd = _field(_KD)
    tf_s = _field(_TF)
    beta = _field(_BETA)
    gamma = _field(_GAMMA)
    out_min = _field(_OMIN)
    out_max = _field(_OMAX)
    rate_max = _field(_RATE)
    tt_s = _field(_TT)
    manual_output = _field(_MAN)
    p = _field(_P)
    i = _field(_I)
    d = _field(_D)
    ff = _field(_FF)
    v = _field(_V)
    output = _field(_OUT)

    def __init__(
        self,
        kp,
        ki,
        kd,
        out_min=0.0,
        out_max=1.0,
        reverse=False,
        tf_s=0.0,
        beta=1.0,
        gamma=0.0,
        rate_max=0.0,
        tt_s=0.0,
    ):
        _check_limits(out_min, out_max)
        self._buf = array("f", bytes(4 * _NFLOATS))
        self._io = array("f", bytes(4 * _IO_NFLOATS))
        tpcore.pid_init(self._buf, kp, ki, kd, out_min, out_max)
        self.reverse = reverse
        self.tf_s = tf_s
        self.beta = beta
        self.gamma = gamma
        self.rate_max = rate_max
        self.tt_s = tt_s

    @property
    def reverse(self):
        return self._buf[_REV] != 0.0

    @reverse.setter
    def reverse(self, value):
        self._buf[_REV] = 1.0 if value else 0.0

    @property
    def auto(self):
        return self._buf[_AUTO] != 0.0

    def reset(self, output=None):
        tpcore.pid_reset(self._buf, self._buf[_OMIN] if output is None else output)

    def set_auto(self, auto, output=None):
        if output is None:
            tpcore.pid_set_auto(self._buf, 1 if auto else 0)
        else:
            tpcore.pid_set_auto(self._buf, 1 if auto else 0, output)

    @micropython.native
    def update(self, setpoint, measurement, dt_s, ff=0.0, track=None):
        io = self._io
        io[0] = setpoint
        io[1] = measurement
        io[2] = dt_s
        io[3] = ff
        if track is None:
            io[5] = 0.0
        else:
            io[4] = track
            io[5] = 1.0
        status = tpcore.pid_step(self._buf, io)
        if status == _BAD_DT:
            raise ValueError("dt_s must be > 0 s: %r" % dt_s)
        if status:
            raise ValueError("setpoint, measurement and ff must be finite")
        return io[6]

    def step(self, io):
        # the binding checks io (array('f') of 7 floats) and allocates nothing
        return tpcore.pid_step(self._buf, io)


PID = PIDPy if tpcore is None else PIDNative
