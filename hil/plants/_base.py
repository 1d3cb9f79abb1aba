"""Shared parameter and input handling for the plant models.

Every plant declares

* ``PARAMS``: ``name -> (default, unit, source)``; the source says where the number comes from
  (datasheet, textbook, paper) or that it is a stated assumption;
* ``INPUTS``: ``name -> (default, low, high, kind, unit)`` where ``kind`` is ``"clamp"`` for an
  actuator command (saturated to ``[low, high]`` as real hardware would) or ``"check"`` for a
  boundary condition (a value outside ``[low, high]`` is a scenario mistake: ``ValueError``);
* ``CHANGEABLE``: ``name -> (unit, low, high, doc)``, the parameters a scenario may change while
  the plant runs (a refrigerant leak, fouling, a chiller or a pump that fails). Every changeable
  name is also a ``PARAMS`` name, so its value at the start can be given to the constructor;
  :meth:`PlantBase.set_param` changes it mid-run. The same range applies to both.
"""

import math

C_TO_K = 273.15


class PlantBase:
    """Parameter validation, input parsing, mid-run parameter changes, the ``outputs()``
    contract."""

    NAME = "plant"
    PARAMS = {}
    INPUTS = {}
    CHANGEABLE = {}

    def __init__(self, **params):
        unknown = sorted(set(params) - set(self.PARAMS))
        if unknown:
            raise ValueError(
                "unknown %s parameter(s) %s; expected some of: %s"
                % (self.NAME, ", ".join(unknown), ", ".join(sorted(self.PARAMS)))
            )
        self.p = {k: v[0] for k, v in self.PARAMS.items()}
        for k, v in params.items():
            default = self.PARAMS[k][0]
            if isinstance(default, (int, float)) and not isinstance(default, bool):
                try:
                    v = float(v) if isinstance(default, float) else int(v)
                except (TypeError, ValueError):
                    raise ValueError(
                        "%s parameter %s=%r is not a number" % (self.NAME, k, v)
                    ) from None
                if not math.isfinite(v):
                    raise ValueError("%s parameter %s=%r is not finite" % (self.NAME, k, v))
            if k in self.CHANGEABLE:
                v = self._check_changeable(k, v)
            self.p[k] = v
        self._inputs = {k: v[0] for k, v in self.INPUTS.items()}

    @classmethod
    def defaults(cls):
        """Default parameter values, ``name -> value``."""
        return {k: v[0] for k, v in cls.PARAMS.items()}

    def _require_positive(self, *names):
        for k in names:
            if not self.p[k] > 0:
                raise ValueError(
                    "%s parameter %s=%r out of range; expected > 0" % (self.NAME, k, self.p[k])
                )

    # ------------------------------------------------------------ mid-run changes
    def _check_changeable(self, name, value):
        if name not in self.CHANGEABLE:
            raise ValueError(
                "%s parameter %r cannot be changed while running; changeable: %s"
                % (self.NAME, name, ", ".join(sorted(self.CHANGEABLE)) or "none")
            )
        unit, lo, hi, _doc = self.CHANGEABLE[name]
        if isinstance(value, bool):
            raise ValueError("%s parameter %s=%r is not a number" % (self.NAME, name, value))
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ValueError(
                "%s parameter %s=%r is not a number; expected %g..%g %s"
                % (self.NAME, name, value, lo, hi, unit)
            ) from None
        if not (math.isfinite(v) and lo <= v <= hi):
            raise ValueError(
                "%s parameter %s=%r out of range; expected %g..%g %s"
                % (self.NAME, name, value, lo, hi, unit)
            )
        return v

    def set_param(self, name, value):
        """Change the changeable parameter ``name`` to ``value`` while the plant runs.

        The change takes effect from the next :meth:`step`; what it means physically (where a
        leak takes refrigerant from, what a worn pump loses) is in the plant's ``CHANGEABLE``
        doc and in docs/plants.md.

        Raises
        ------
        ValueError
            If ``name`` is not in ``CHANGEABLE`` (the message lists the changeable names) or
            ``value`` is not a finite number inside the declared range (the message names the
            value and the range). The plant is left unchanged.
        """
        v = self._check_changeable(name, value)
        old = self.p[name]
        self.p[name] = v
        try:
            self._param_changed(name, old, v)
        except Exception:
            self.p[name] = old
            raise

    def _param_changed(self, name, old, new):
        """Hook: update derived quantities after ``set_param`` (plants override)."""

    def param(self, name):
        """Current value of parameter ``name`` (changeable ones reflect ``set_param``)."""
        if name not in self.p:
            raise ValueError(
                "unknown %s parameter %r; expected one of: %s"
                % (self.NAME, name, ", ".join(sorted(self.p)))
            )
        return self.p[name]

    # --------------------------------------------------------------------- inputs
    def parse_inputs(self, inputs):
        """Validate ``inputs`` (a dict), apply defaults and clamp actuator commands.

        Returns
        -------
        dict
            Every declared input, as floats, after clamping.
        """
        unknown = [k for k in inputs if k not in self.INPUTS]
        if unknown:
            raise ValueError(
                "unknown %s input(s) %s; expected some of: %s"
                % (self.NAME, ", ".join(sorted(unknown)), ", ".join(sorted(self.INPUTS)))
            )
        out = {}
        for k, (default, lo, hi, kind, unit) in self.INPUTS.items():
            v = inputs.get(k, default)
            try:
                v = float(v)
            except (TypeError, ValueError):
                raise ValueError("%s input %s=%r is not a number" % (self.NAME, k, v)) from None
            if not math.isfinite(v):
                raise ValueError(
                    "%s input %s=%r is not finite; expected %g..%g %s"
                    % (self.NAME, k, v, lo, hi, unit)
                )
            if kind == "clamp":
                v = lo if v < lo else hi if v > hi else v
            elif not lo <= v <= hi:
                raise ValueError(
                    "%s input %s=%g out of range; expected %g..%g %s"
                    % (self.NAME, k, v, lo, hi, unit)
                )
            out[k] = v
        self._inputs = out
        return out

    @staticmethod
    def _check_dt(dt_s):
        if not (isinstance(dt_s, (int, float)) and math.isfinite(dt_s) and 0 < dt_s <= 10.0):
            raise ValueError("dt_s=%r out of range; expected 0 < dt_s <= 10 s" % (dt_s,))
        return float(dt_s)
