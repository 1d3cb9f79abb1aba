"""What every long-running ``thermopilot`` command shares on the console: a progress line,
a clean stop on Ctrl-C, errors the user can act on, and machine-readable output.

Conventions (deploy, flash, hil run, campaign, tune):

- Progress goes to stderr, so stdout stays clean for ``--json`` and pipes. On a terminal it
  is one line rewritten in place; otherwise (CI logs) a line is printed at most every
  ``plain_every_s`` seconds and at the end.
- The first Ctrl-C asks the command to stop at its next safe point (``StopRequest.requested``
  or ``StopRequest.check()``); the command puts the board in a safe state, writes what it has
  (a partial report marked as interrupted) and exits 130. A second Ctrl-C stops at once.
- A user's mistake raises :class:`UserError`: one line on stderr, exit code 2, no traceback.

Example::

    with console.stop_on_ctrl_c() as stop, console.Progress("hil", total=n) as bar:
        for k in range(n):
            stop.check()  # raises Interrupted after Ctrl-C
            bar.update(k, note="sim %.0f s" % t_s)
"""

import contextlib
import json
import math
import os
import shutil
import signal
import sys
import threading
import time

EXIT_OK = 0
EXIT_FAILED = 1  # a HIL criterion failed, a fault stays latched
EXIT_USAGE = 2  # a mistake the user can fix (bad value, missing port, board not answering)
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports it


class UserError(Exception):
    """A mistake the user can fix; printed as one line, exit code 2."""


class Interrupted(Exception):
    """The user pressed Ctrl-C; the message says what was done about it. Exit code 130."""


# -- progress ------------------------------------------------------------------------------


def _fmt_time(t_s):
    if t_s < 60:
        return "%.1f s" % t_s
    m, s = divmod(int(t_s), 60)
    if m < 60:
        return "%d:%02d" % (m, s)
    h, m = divmod(m, 60)
    return "%d:%02d:%02d" % (h, m, s)


def fmt_bytes(n):
    """A byte count for people: 812 B, 12.3 kB, 1.4 MB."""
    if n < 1000:
        return "%d B" % n
    if n < 1e6:
        return "%.1f kB" % (n / 1e3)
    return "%.1f MB" % (n / 1e6)


class Progress:
    """A progress line on stderr: label, a bar when the total is known, done/total, wall
    time and a free note (e.g. the current criterion state of a HIL run).

    Parameters
    ----------
    label : str
        What is in progress, e.g. ``"copy"``, ``"hil battery_hold"``.
    total : float or None
        Amount of work (bytes, steps, simulated seconds); None shows no bar.
    unit : str
        ``"bytes"`` formats amounts as kB/MB; any other text is appended to the numbers.
    stream : file
        Where the line goes (stderr by default).
    plain_every_s : float
        Off a terminal, print a line at most this often (and once at the end).
    """

    def __init__(self, label, total=None, unit="", stream=None, plain_every_s=10.0):
        self.label = label
        self.total = total
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        try:
            self.tty = self.stream.isatty()
        except (AttributeError, ValueError):
            self.tty = False
        self.plain_every_s = plain_every_s
        self.t0 = time.monotonic()
        self._last = -math.inf
        self._shown = False
        self.done_amount = 0
        self.note = ""
        self._written = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.finish()

    def _amount(self, x):
        if self.unit == "bytes":
            return fmt_bytes(x)
        if self.unit:
            return "%g %s" % (x, self.unit)
        return "%g" % x

    def line(self):
        """The progress line as text (without the terminal control)."""
        parts = [self.label]
        if self.total:
            frac = min(1.0, max(0.0, self.done_amount / self.total))
            width = 20
            n = int(round(frac * width))
            parts.append("[%s%s] %3d%%" % ("#" * n, "-" * (width - n), int(frac * 100)))
            if self.unit == "bytes":
                parts.append("%s/%s" % (fmt_bytes(self.done_amount), fmt_bytes(self.total)))
            else:
                parts.append(
                    "%g/%g%s"
                    % (self.done_amount, self.total, " " + self.unit if self.unit else "")
                )
        elif self.done_amount:
            parts.append(self._amount(self.done_amount))
        parts.append("wall " + _fmt_time(time.monotonic() - self.t0))
        if self.note:
            parts.append(self.note)
        return "  ".join(parts)

    def update(self, done=None, total=None, note=None, force=False):
        """Record progress and redraw (at most 10 times a second on a terminal)."""
        if done is not None:
            self.done_amount = done
        if total is not None:
            self.total = total
        if note is not None:
            self.note = note
        now = time.monotonic()
        every = 0.1 if self.tty else self.plain_every_s
        if not force and now - self._last < every:
            return
        self._last = now
        self._write()

    def _write(self):
        self._written = (self.done_amount, self.total, self.note)
        text = self.line()
        try:
            if self.tty:
                width = shutil.get_terminal_size((80, 24)).columns - 1
                self.stream.write("\r" + text[:width].ljust(width))
            else:
                self.stream.write(text + "\n")
            self.stream.flush()
            self._shown = True
        except (OSError, ValueError):
            pass  # a closed stderr must not stop the work

    def finish(self, note=None):
        """Draw the final state and end the line."""
        if note is not None:
            self.note = note
        if not self._shown and (
            self.done_amount == 0 or (self.tty and time.monotonic() - self.t0 < 0.5)
        ):
            return  # nothing done, or too quick to be worth a line
        if self.tty or self._written != (self.done_amount, self.total, self.note):
            self._write()
        if self.tty:
            with contextlib.suppress(OSError, ValueError):
                self.stream.write("\n")
                self.stream.flush()
        self._last = math.inf  # no more redraws


# -- Ctrl-C --------------------------------------------------------------------------------


class StopRequest:
    """Set by the first Ctrl-C inside :func:`stop_on_ctrl_c`."""

    def __init__(self):
        self.requested = False
        self.at = None

    def check(self, what="stopped"):
        """Raise :class:`Interrupted` once Ctrl-C was pressed."""
        if self.requested:
            raise Interrupted(what)


@contextlib.contextmanager
def stop_on_ctrl_c(message="stopping at the next safe point (Ctrl-C again to stop at once)"):
    """The first Ctrl-C sets ``StopRequest.requested`` and prints ``message``; the second
    raises KeyboardInterrupt. Outside the main thread (or without SIGINT) it yields a
    StopRequest that is never set."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested = True
        stop.at = time.monotonic()
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write("\nthermopilot: Ctrl-C: %s\n" % message)
            sys.stderr.flush()

    old = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, old)


# -- output --------------------------------------------------------------------------------


def print_json(obj):
    """``obj`` as JSON on stdout (non-finite floats become null, as JSON has no NaN)."""

    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    sys.stdout.write(json.dumps(clean(obj), indent=2, ensure_ascii=False) + "\n")


def quiet_broken_pipe():
    """After stdout's reader went away (``thermopilot info | head``): send further output to
    /dev/null so that the interpreter's final flush does not complain."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
