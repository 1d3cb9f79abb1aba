"""pytest plugin: HIL tests against the virtual board, or against a real board with one flag.

Installed with ThermoPilot (entry point ``pytest11``), active in every pytest run. In the
spirit of pytest-embedded (a ``dut`` fixture, a ``--port`` option):

* ``board``: the board under test. A fresh virtual board per test (its definition from the
  ``hil`` marker, ``@pytest.mark.hil(board="virtual_hp")``, else ``--tp-board``, else
  ``virtual``), or the real board on ``--tp-port PORT`` (a test whose marker names another
  board is skipped with the reason). ``board.port``, ``board.name``, ``board.virtual``.
* ``session``: a connected link (thermopilot.protocol.link.Session, HELLO done) to ``board``.
* ``run_scenario(scenario, seed=1)``: runs a scenario (a path, a bundled scenario's name or a
  dict from hil.scenario) on ``board`` (lockstep on the virtual board, real time on a real
  one), writes its report (``--tp-report-dir``, default the test's tmp_path) and returns the
  hil.rig.RigResult with its verdicts (``result.passed``, ``result.verdicts``, ``result.rows``).
* the ``hil`` marker: ``pytest -m hil`` selects the HIL tests.
* ``--tp-scenarios`` collects every bundled scenario as a test (``tp_scenarios = true`` in
  the ini file does the same), and files named ``hil_*.toml`` in the test directories are
  collected as scenario tests always. With ``--tp-port``, scenarios for another board are
  skipped.

``pytest --tp-port /dev/ttyACM0`` runs the same suite against the bench board.
"""

import pathlib
import tempfile

import pytest


def pytest_addoption(parser):
    g = parser.getgroup("thermopilot", "ThermoPilot HIL")
    g.addoption(
        "--tp-port",
        default=None,
        help="run HIL tests against the real board on this serial port (real time)",
    )
    g.addoption(
        "--tp-board",
        default=None,
        help="virtual board definition for tests whose hil marker names none (default virtual)",
    )
    g.addoption(
        "--tp-scenarios",
        action="store_true",
        default=False,
        help="collect the bundled HIL scenarios as tests",
    )
    g.addoption(
        "--tp-report-dir", default=None, help="where HIL reports go (default: each test's tmp)"
    )
    g.addoption(
        "--tp-no-native",
        action="store_true",
        default=False,
        help="virtual boards run the MicroPython fallback instead of the C core",
    )
    parser.addini("tp_scenarios", "collect the bundled HIL scenarios as tests", type="bool")


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "hil(board=None): a hardware-in-the-loop test; board names the board definition it "
        "needs (started as a virtual board, or checked against the real board of --tp-port)",
    )


class Board:
    """The board under test (pytest-embedded's ``dut``): a virtual board or a real one."""

    def __init__(self, config, want=None):
        self.config = config
        self.port = config.getoption("--tp-port")
        self.virtual = self.port is None
        self.want = want
        self.vb = None
        self.name = None
        self.native = not config.getoption("--tp-no-native")

    def start(self, name=None):
        """Make sure the board runs; for a virtual board, with definition ``name``."""
        if not self.virtual:
            if self.name is None:
                from thermopilot.protocol.link import Session

                with Session(self.port) as s:
                    self.name = bytes(s.hello().board).split(b"\x00", 1)[0].decode()
            if name is not None and name != self.name:
                pytest.skip("needs board %s; the board on %s is %s" % (name, self.port, self.name))
            return self
        name = name or self.want or self.config.getoption("--tp-board") or "virtual"
        if self.vb is not None and self._def != name:
            self.stop()
        if self.vb is None:
            from thermopilot.hil.vboard import VirtualBoard

            self.vb = VirtualBoard(board=name, native=self.native).start()
            self._def = name
            self.port = self.vb.port
            self.name = self.vb.board.get("name", name)
        return self

    def stop(self):
        if self.vb is not None:
            self.vb.stop()
            self.vb = None
            self.port = None

    def __repr__(self):
        return "<Board %s on %s%s>" % (self.name, self.port, " (virtual)" if self.virtual else "")


def _wanted_board(request):
    m = request.node.get_closest_marker("hil")
    if m is None:
        return None
    return m.kwargs.get("board") or (m.args[0] if m.args else None)


@pytest.fixture
def board(request):
    """The board under test: a fresh virtual board, or the real board of --tp-port."""
    b = Board(request.config, _wanted_board(request))
    b.start(b.want)
    yield b
    b.stop()


@pytest.fixture
def session(board):
    """A connected link to ``board`` (HELLO done)."""
    from thermopilot.protocol.link import Session

    with Session(board.port) as s:
        s.hello()
        yield s


def _load(scenario):
    from thermopilot.hil import resources
    from thermopilot.hil import scenario as scenario_mod

    if isinstance(scenario, dict):
        if "board_path" in scenario:
            return scenario
        return scenario_mod.check(scenario, "scenario")
    p = pathlib.Path(scenario)
    if not p.exists():
        q = resources.scenarios_dir() / (str(scenario) + ".toml")
        if q.exists():
            p = q
    return scenario_mod.load(p)


def _report_dir(config, fallback):
    d = config.getoption("--tp-report-dir")
    return pathlib.Path(d) if d else pathlib.Path(fallback)


def run_on(board, scenario, out_dir, seed=1):
    """Run ``scenario`` on ``board``, write its report into ``out_dir``; the RigResult."""
    from thermopilot.hil import report, rig
    from thermopilot.protocol.link import Session

    sc = _load(scenario)
    the_rig = rig.Rig(sc, seed=seed)
    # a virtual board runs the scenario's definition; a real board must be that board
    board.start(sc["board_path"] if board.virtual else the_rig.ctx.board_name)
    with Session(board.port) as s:
        result = the_rig.run(s, realtime=not board.virtual)
    result.evaluate()
    report.write(result, pathlib.Path(out_dir) / sc["name"])
    return result


@pytest.fixture
def run_scenario(request, board, tmp_path):
    """``run_scenario(scenario, seed=1) -> RigResult`` on ``board``."""
    out = _report_dir(request.config, tmp_path)

    def run(scenario, seed=1):
        return run_on(board, scenario, out, seed)

    return run


def verdict_text(result):
    lines = ["%s: %s" % (result.scenario["name"], "PASSED" if result.passed else "FAILED")]
    for v in result.verdicts:
        lines.append("  %s %s: %s" % ("PASS" if v["passed"] else "FAIL", v["label"], v["detail"]))
    return "\n".join(lines)


# -- scenarios as tests ----------------------------------------------------------------------


class ScenarioError(Exception):
    pass


class ScenarioItem(pytest.Item):
    def __init__(self, *, path_toml, **kw):
        super().__init__(**kw)
        self.path_toml = pathlib.Path(path_toml)
        self.add_marker(pytest.mark.hil)

    def runtest(self):
        b = Board(self.config)
        try:
            factory = getattr(self.config, "_tmp_path_factory", None)  # pytest's tmp_path
            tmp = (
                factory.mktemp(self.path_toml.stem)
                if factory is not None
                else tempfile.mkdtemp(prefix="thermopilot-hil-")
            )
            out = _report_dir(self.config, tmp)
            result = run_on(b, self.path_toml, out)
        finally:
            b.stop()
        self.user_properties.append(("report", str(out / result.scenario["name"])))
        if not result.passed:
            raise ScenarioError(
                verdict_text(result) + "\n  report: %s" % (out / result.scenario["name"])
            )

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, ScenarioError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path_toml, 0, "hil scenario: %s" % self.path_toml.stem


class ScenarioFile(pytest.File):
    def collect(self):
        yield ScenarioItem.from_parent(self, name=self.path.stem, path_toml=self.path)


def pytest_collect_file(file_path, parent):
    if file_path.suffix == ".toml" and file_path.name.startswith("hil_"):
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


def _bundled_wanted(config):
    return config.getoption("--tp-scenarios") or config.getini("tp_scenarios")


def pytest_collection_modifyitems(session, config, items):
    if not _bundled_wanted(config):
        return
    from thermopilot.hil import resources

    for p in sorted(resources.scenarios_dir().glob("*.toml")):
        f = ScenarioFile.from_parent(session, path=p)
        items.extend(f.collect())
