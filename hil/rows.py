"""The rows of a run: one row per tick, a fixed set of float columns, kept in blocks.

Rows are stored as a list of numpy blocks (``BLOCK`` rows each), not as a dict per row, so a run
costs 8 bytes per value and appending costs one array assignment; a block that is full could as
well be streamed to disk. ``rows[signal]`` is a column as a numpy array (a copy while the run
is under way, a view once :meth:`Rows.freeze` joined the blocks).
"""

import numpy as np

BLOCK = 4096


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

    def __init__(self, columns, ctx=None, dt_s=0.1, aliases=None):
        self.columns = list(columns)
        self.index = {c: i for i, c in enumerate(self.columns)}
        self.aliases = dict(aliases or {})
        self.ctx = ctx
        self.dt_s = dt_s
        self.injections = []
        self._blocks = []
        self._cur = np.empty((BLOCK, len(self.columns)))
        self._n = 0
        self._frozen = None

    def __len__(self):
        return len(self._blocks) * BLOCK + self._n if self._frozen is None else len(self._frozen)

    def append(self, values):
        """Add one row (a sequence of floats in column order)."""
        self._cur[self._n] = values
        self._n += 1
        if self._n == BLOCK:
            self._blocks.append(self._cur)
            self._cur = np.empty((BLOCK, len(self.columns)))
            self._n = 0

    def blocks(self):
        """The filled blocks in order (2-D arrays, rows x columns)."""
        if self._frozen is not None:
            yield self._frozen
            return
        yield from self._blocks
        if self._n:
            yield self._cur[: self._n]

    def freeze(self):
        """Join the blocks once the run is over (columns become views, not copies)."""
        if self._frozen is None:
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
        parts = [b[:, k] for b in self.blocks()]
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
        return float("nan")

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
