"""The rows of a run: one row per tick, a fixed set of float columns, kept in blocks.

Rows are stored in numpy blocks (``BLOCK`` rows each), not as a dict per row: a run costs 8
bytes per value and appending costs one array assignment. With ``spill`` (what the rig uses)
every block that fills is written to an unnamed temporary file, one column after another, and
the block's memory is reused, so a run's memory stays flat however long it simulates; a column
is read back from that file when asked for (``rows[signal]``, a fresh array each time).
Without it the blocks stay in memory.

``stream_csv(path)`` writes rows.csv while the run goes: :meth:`Rows.format_pending` formats
the rows appended since its last call (the rig calls it while the board computes its
answer), full blocks of text go to ``path + ".part"``, and :meth:`Rows.finish_csv` writes the
rest and renames the file, so the report has no hour of rows left to format at the end.
"""

import os
import tempfile

import numpy as np

BLOCK = 4096


def csv_formats(columns):
    """printf formats of each column in rows.csv: time to the ms, counters and modes as
    integers (NaN, no telemetry yet, stays readable), everything else to 7 digits."""
    fmt = []
    for c in columns:
        if c == "t_s":
            fmt.append("%.3f")
        elif c == "faults" or c.endswith(".mode") or c.endswith(".state"):
            fmt.append("%.0f")
        else:
            fmt.append("%.7g")
    return fmt


class Rows:
    """Columns ``columns`` (canonical signal names, ``t_s`` first).

    Attributes
    ----------
    ctx : scenario.Context
        The scenario's board and plant (criteria and plots read it).
    injections : list of dict
        Faults the rig injected: index, kind, label, t_s, t_end (simulated s).
    dt_s : float
        Tick period, s.
    """

    def __init__(self, columns, ctx=None, dt_s=0.1, aliases=None, spill=False):
        self.columns = list(columns)
        self.index = {c: i for i, c in enumerate(self.columns)}
        self.aliases = dict(aliases or {})
        self.ctx = ctx
        self.dt_s = dt_s
        self.injections = []
        self._blocks = []  # full blocks kept in memory (no spill)
        self._spill = tempfile.TemporaryFile(prefix="thermopilot-rows-") if spill else None
        self._n_spilled = 0  # full blocks in the spill file
        self._cur = np.empty((BLOCK, len(self.columns)))
        self._n = 0
        self._frozen = None
        self._csv = None  # open rows.csv.part while streaming
        self._csv_path = None
        self._csv_done = 0  # rows of the current block already formatted
        self._csv_text = []
        self._csv_row = ""

    def __len__(self):
        if self._frozen is not None:
            return len(self._frozen)
        return (len(self._blocks) + self._n_spilled) * BLOCK + self._n

    def append(self, values):
        """Add one row (a sequence of floats in column order)."""
        self._cur[self._n] = values
        self._n += 1
        if self._n == BLOCK:
            if self._csv is not None:
                self.format_pending()
                self._csv.write("".join(self._csv_text))
                self._csv_text = []
                self._csv_done = 0
            if self._spill is not None:
                # column after column: reading one back is BLOCK contiguous values per block
                self._spill.write(np.ascontiguousarray(self._cur.T).tobytes())
                self._n_spilled += 1
            else:
                self._blocks.append(self._cur)
                self._cur = np.empty((BLOCK, len(self.columns)))
            self._n = 0

    # -- rows.csv while the run goes ---------------------------------------------------------

    def stream_csv(self, path):
        """Write rows.csv at ``path`` while rows come (to ``path + ".part"`` until
        :meth:`finish_csv`); rows already appended are written first."""
        path = os.fspath(path)
        self._csv_path = path
        self._csv = open(path + ".part", "w")  # noqa: SIM115 - closed by finish_csv
        self._csv.write(",".join(self.columns) + "\n")
        self._csv_row = ",".join(csv_formats(self.columns)) + "\n"
        self._csv_done = 0
        for block in self._full_blocks():
            self._csv.write((self._csv_row * len(block)) % tuple(block.ravel().tolist()))

    def format_pending(self):
        """Format the rows appended since the last call (cheap: one or two per tick)."""
        if self._csv is None:
            return
        row = self._csv_row
        cur = self._cur
        text = self._csv_text
        for i in range(self._csv_done, self._n):
            text.append(row % tuple(cur[i].tolist()))
        self._csv_done = self._n

    def finish_csv(self):
        """Write the rows not yet written, close rows.csv and give it its name; returns its
        path (None if not streaming)."""
        if self._csv is None:
            return None
        self.format_pending()
        self._csv.write("".join(self._csv_text))
        self._csv_text = []
        self._csv.close()
        self._csv = None
        os.replace(self._csv_path + ".part", self._csv_path)
        return self._csv_path

    def abandon_csv(self):
        """Stop streaming and remove the partial file (a run that produced no report)."""
        if self._csv is not None:
            self._csv.close()
            self._csv = None
            try:
                os.remove(self._csv_path + ".part")
            except OSError:
                pass

    @property
    def csv_path(self):
        """Where rows.csv is being (or was) streamed, or None."""
        return self._csv_path

    # -- reading -----------------------------------------------------------------------------

    def _spilled_block(self, b):
        ncol = len(self.columns)
        raw = os.pread(self._spill.fileno(), BLOCK * ncol * 8, b * BLOCK * ncol * 8)
        return np.frombuffer(raw).reshape(ncol, BLOCK).T

    def _full_blocks(self):
        for b in range(self._n_spilled):
            yield self._spilled_block(b)
        yield from self._blocks

    def blocks(self):
        """The filled blocks in order (2-D arrays, rows x columns)."""
        if self._frozen is not None:
            yield self._frozen
            return
        yield from self._full_blocks()
        if self._n:
            yield self._cur[: self._n]

    def freeze(self):
        """The run is over. Blocks in memory are joined once (columns become views, not
        copies); spilled rows stay on disk."""
        if self._frozen is None and self._spill is None:
            parts = list(self.blocks())
            self._frozen = np.concatenate(parts) if parts else np.empty((0, len(self.columns)))
            self._blocks = []
            self._cur = None
            self._n = 0
        return self

    def has(self, name):
        return self.aliases.get(name, name) in self.index

    def __getitem__(self, name):
        k = self.index[self.aliases.get(name, name)]
        if self._frozen is not None:
            return self._frozen[:, k]
        parts = []
        if self._n_spilled:
            fd = self._spill.fileno()
            size = BLOCK * 8
            stride = BLOCK * len(self.columns) * 8
            for b in range(self._n_spilled):
                parts.append(np.frombuffer(os.pread(fd, size, b * stride + k * size)))
        parts += [b[:, k] for b in self._blocks]
        if self._n:
            parts.append(self._cur[: self._n, k])
        return np.concatenate(parts) if parts else np.empty(0)

    @property
    def t(self):
        return self["t_s"]

    def last(self, name):
        """The last value of a column (NaN when there are no rows)."""
        k = self.index[self.aliases.get(name, name)]
        if self._frozen is not None:
            return float(self._frozen[-1, k]) if len(self._frozen) else float("nan")
        if self._n:
            return float(self._cur[self._n - 1, k])
        if self._blocks:
            return float(self._blocks[-1][-1, k])
        if self._n_spilled:
            return float(self._spilled_block(self._n_spilled - 1)[-1, k])
        return float("nan")

    def close(self):
        """Remove the spill file (the rows cannot be read after this)."""
        self.abandon_csv()
        if self._spill is not None:
            self._spill.close()

    def injection(self, index):
        """The injection record of [[faults]] entry ``index`` (scheduled if not yet run)."""
        for inj in self.injections:
            if inj["index"] == index:
                return inj
        f = self.ctx.faults[index]
        return {
            "index": index,
            "kind": f["kind"],
            "label": f["kind"],
            "t_s": f["t_s"],
            "t_end": f["t_s"] + f["duration_s"],
        }
