"""Strict reading of a TOML table: every key checked, typed, ranged, with aliases.

Used by the scenario loader and by the fault and criteria registries, so that every table of a
scenario (and of a campaign) says the same things the same way: a misspelt key names the valid
ones, a wrong value names the key, the value and what was expected.
"""

import difflib
import math

REQUIRED = object()


class ScenarioError(ValueError):
    """A scenario (or campaign) file that cannot be run; the message names the file, the
    table, the key, the value and what was expected."""


class Key:
    """One key of a table.

    Parameters
    ----------
    kind : type or tuple
        ``float`` (any finite number), ``int``, ``str``, ``bool``, ``list``, ``dict`` or a tuple
        of those (the first that matches wins).
    default : object
        ``REQUIRED`` when the key must be given.
    doc : str
        One line for ``hil list --kinds`` and the docs.
    lo, hi : float
        Inclusive range for numbers (None: unbounded); ``lo_open``/``hi_open`` make it open.
    choices : sequence
        Allowed values (strings).
    """

    def __init__(
        self,
        kind,
        default=REQUIRED,
        doc="",
        lo=None,
        hi=None,
        lo_open=False,
        hi_open=False,
        choices=None,
        unit="",
    ):
        self.kind = kind if isinstance(kind, tuple) else (kind,)
        self.default = default
        self.doc = doc
        self.lo = lo
        self.hi = hi
        self.lo_open = lo_open
        self.hi_open = hi_open
        self.choices = choices
        self.unit = unit

    @property
    def required(self):
        return self.default is REQUIRED

    def describe(self):
        """Short type and range text: 'number > 0 s', 'one of: a, b'."""
        if self.choices:
            return "one of: " + ", ".join(map(str, self.choices))
        names = {float: "number", int: "integer", str: "string", bool: "true/false"}
        t = " or ".join(names.get(k, k.__name__) for k in self.kind)
        rng = []
        if self.lo is not None:
            rng.append("%s %g" % (">" if self.lo_open else ">=", self.lo))
        if self.hi is not None:
            rng.append("%s %g" % ("<" if self.hi_open else "<=", self.hi))
        return (t + " " + " and ".join(rng)).strip() + ((" " + self.unit) if self.unit else "")

    def convert(self, value, name, where):
        for k in self.kind:
            if k is float and isinstance(value, (int, float)) and not isinstance(value, bool):
                v = float(value)
                if not math.isfinite(v):
                    raise ScenarioError("%s: %s = %r is not finite" % (where, name, value))
                break
            if k is int and isinstance(value, int) and not isinstance(value, bool):
                v = value
                break
            if k is bool and isinstance(value, bool):
                v = value
                break
            if k in (str, list, dict) and isinstance(value, k):
                v = value
                break
        else:
            raise ScenarioError(
                "%s: %s = %r; expected a %s" % (where, name, value, self.describe())
            )
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            bad = (self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo)) or (
                self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi)
            )
            if bad:
                raise ScenarioError(
                    "%s: %s = %r out of range; expected a %s"
                    % (where, name, value, self.describe())
                )
        if self.choices is not None and v not in self.choices:
            raise ScenarioError(
                "%s: %s = %r; expected one of: %s"
                % (where, name, value, ", ".join(map(str, self.choices)))
            )
        return v


def unknown_keys_message(where, unknown, valid):
    """'unknown key(s) ...; did you mean ...? valid keys: ...'."""
    hints = []
    for u in sorted(unknown):
        close = difflib.get_close_matches(u, valid, n=1)
        if close:
            hints.append("%s -> %s?" % (u, close[0]))
    return "%s: unknown key(s) %s%s; valid keys: %s" % (
        where,
        ", ".join(sorted(unknown)),
        " (did you mean %s)" % ", ".join(hints) if hints else "",
        ", ".join(sorted(valid)),
    )


def read_table(raw, keys, where, aliases=None, fixed=()):
    """Check ``raw`` (a dict from TOML) against ``keys`` (name -> Key).

    ``aliases`` maps an old key to its new name (both may not be given). ``fixed`` lists keys
    the caller handled already (e.g. ``kind``). Returns a dict with every key of ``keys``
    (defaults filled in; a default of None stays None).
    """
    if not isinstance(raw, dict):
        raise ScenarioError("%s: expected a table, got %r" % (where, raw))
    aliases = aliases or {}
    out = {}
    valid = set(keys) | set(fixed)
    unknown = [k for k in raw if k not in valid and k not in aliases]
    if unknown:
        raise ScenarioError(unknown_keys_message(where, unknown, sorted(valid)))
    given = {}
    for k, v in raw.items():
        if k in fixed:
            continue
        new = aliases.get(k, k)
        if new in given:
            raise ScenarioError(
                "%s: %s and %s are the same key (%s is the old name); give one"
                % (where, given[new][0], k, k if k in aliases else given[new][0])
            )
        given[new] = (k, v)
    for name, key in keys.items():
        if name in given:
            src, v = given[name]
            out[name] = key.convert(v, src, where)
        elif key.required:
            raise ScenarioError(
                "%s: missing %s (%s)%s"
                % (where, name, key.describe(), (": " + key.doc) if key.doc else "")
            )
        else:
            out[name] = key.default
    return out


def choice_message(where, what, value, valid):
    close = difflib.get_close_matches(str(value), list(valid), n=1)
    return "%s: %s = %r%s; expected one of: %s" % (
        where,
        what,
        value,
        " (did you mean %r?)" % close[0] if close else "",
        ", ".join(valid),
    )
