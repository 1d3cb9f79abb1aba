"""PID step in C (float32) through cffi: the same code and maths as the board's ``tpcore``.

The C sources are ``firmware/native/tp_pid.c``; ``firmware/tpfw/pid.py`` is the board's
MicroPython version of the same step.
"""

from thermopilot.host._tpcore import ffi, lib

from ._checks import finite as _finite

__all__ = ["PID"]


class PID:
    """PID controller step in C (float32), the same maths as the board.

    Parameters
    ----------
    kp, ki, kd : float
        Gains: output per unit error, per unit error-second (1/s), per unit error/s (s).
    out_min, out_max : float
        Output limits, ``out_min <= out_max``.
    reverse : bool
        True when more output lowers the measurement (a cooling pump): the error is
        ``measurement - setpoint``.
    tf_s : float
        Derivative filter time constant in s (>= 0; 0 = unfiltered).
    beta, gamma : float
        Setpoint weights on P and D (classic: 1 and 0; gamma 0 is derivative on
        measurement).
    rate_max : float
        Output rate limit in output units per s (0 = none).
    tt_s : float
        Anti-windup tracking time constant in s (back-calculation; 0 = one step).

    Notes
    -----
    Anti-windup is back-calculation: after limiting, the integrator moves by
    ``min(dt_s/tt_s, 1) * (applied - unsaturated)`` where ``applied`` is the limited output
    or the ``track`` input of :meth:`update`. Components ``p, i, d, ff`` are exposed for
    telemetry.
    """

    _PARAMS = ("kp", "ki", "kd", "tf_s", "beta", "gamma", "rate_max", "tt_s")

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
        self._c = ffi.new("tp_pid_t *")
        out_min = _finite("out_min", out_min)
        out_max = _finite("out_max", out_max)
        if out_min > out_max:
            raise ValueError("out_min=%g must be <= out_max=%g" % (out_min, out_max))
        lib.tp_pid_init(self._c, 0.0, 0.0, 0.0, out_min, out_max)
        for name, value in zip(
            self._PARAMS, (kp, ki, kd, tf_s, beta, gamma, rate_max, tt_s), strict=True
        ):
            setattr(self, name, value)
        self.reverse = reverse

    def __setattr__(self, name, value):
        if name in self._PARAMS:
            value = _finite(name, value)
            if name in ("tf_s", "rate_max", "tt_s") and value < 0.0:
                raise ValueError("%s=%g out of range [0, inf)" % (name, value))
            setattr(self._c, name, value)
        elif name in ("out_min", "out_max"):
            value = _finite(name, value)
            lo = value if name == "out_min" else self._c.out_min
            hi = value if name == "out_max" else self._c.out_max
            if lo > hi:
                raise ValueError("out_min=%g must be <= out_max=%g" % (lo, hi))
            setattr(self._c, name, value)
        elif name == "reverse":
            self._c.reverse = 1.0 if value else 0.0
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        if name in self._PARAMS or name in ("out_min", "out_max", "p", "i", "d", "ff", "v"):
            return float(getattr(self._c, name))
        if name == "output":
            return float(self._c.output)
        if name == "reverse":
            return self._c.reverse != 0.0
        if name == "auto":
            return self._c.auto_mode != 0.0
        raise AttributeError(name)

    @property
    def components(self):
        """dict: the last step's ``p``, ``i``, ``d``, ``ff`` terms and ``output``."""
        c = self._c
        return {"p": c.p, "i": c.i, "d": c.d, "ff": c.ff, "output": c.output}

    def reset(self, output=None):
        """Clear the state; the output restarts at ``output`` (default ``out_min``)."""
        lib.tp_pid_reset(self._c, self._c.out_min if output is None else _finite("output", output))

    def set_auto(self, auto, output=None):
        """Switch auto (True) / manual (False); the output continues from ``output``."""
        if output is None:
            lib.tp_pid_set_auto(self._c, 1 if auto else 0, 0.0, 0)
        else:
            lib.tp_pid_set_auto(self._c, 1 if auto else 0, _finite("output", output), 1)

    def update(self, setpoint, measurement, dt_s, ff=0.0, track=None):
        """Run one step and return the output.

        Parameters
        ----------
        setpoint, measurement : float
            In the measurement's unit.
        dt_s : float
            Time since the previous step in s, > 0.
        ff : float
            Feed-forward added to the output before limiting.
        track : float or None
            The actuator's real command (after the safety supervisor), if it differs.
        """
        st = lib.tp_pid_step(
            self._c,
            setpoint,
            measurement,
            dt_s,
            ff,
            0.0 if track is None else track,
            0 if track is None else 1,
        )
        if st == lib.TP_PID_BAD_DT:
            raise ValueError("dt_s=%r out of range (0, inf)" % (dt_s,))
        if st == lib.TP_PID_BAD_INPUT:
            raise ValueError(
                "setpoint=%r, measurement=%r, ff=%r, track=%r: all must be finite"
                % (setpoint, measurement, ff, track)
            )
        return float(self._c.output)

    __call__ = update
