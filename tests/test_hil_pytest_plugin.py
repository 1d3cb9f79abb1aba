"""The pytest plugin (entry point pytest11): fixtures board / session / run_scenario, the hil
marker, scenarios collected as tests, and --tp-port for a board that is not started by the
test (here a virtual board standing in for the bench board)."""

import importlib.metadata

from thermopilot.hil import resources
from thermopilot.hil.vboard import VirtualBoard

pytest_plugins = ["pytester"]

TESTS = """
import pytest

@pytest.mark.hil(board="virtual_chip")
def test_board_and_session(board, session):
    assert board.name == "virtual_chip"
    assert [lp["name"] for lp in session.loops()] == ["chip"]

@pytest.mark.hil
def test_run_a_bundled_scenario(run_scenario):
    result = run_scenario("battery_impossible")
    assert not result.passed  # it is meant to fail
    assert result.verdicts[0]["criterion"] == "settles"

def test_not_hil():
    pass
"""


def test_the_plugin_is_registered_as_an_entry_point():
    eps = importlib.metadata.entry_points(group="pytest11")
    assert any(ep.value == "thermopilot.hil.pytest_plugin" for ep in eps)


def test_fixtures_and_marker_on_virtual_boards(pytester):
    pytester.makepyfile(test_lab=TESTS)
    res = pytester.runpytest_subprocess("-m", "hil", "-v", "-p", "no:cacheprovider")
    res.assert_outcomes(passed=2, deselected=1)
    res.stdout.fnmatch_lines(["*test_board_and_session PASSED*"])


def test_tp_port_runs_the_suite_against_a_given_board(pytester, tmp_path):
    pytester.makepyfile(test_lab=TESTS)
    scen = (resources.scenarios_dir() / "battery_impossible.toml").read_text()
    scen = scen.replace("duration_s = 60", "duration_s = 3").replace("band = 0.001", "band = 50")
    scen = scen.replace('name = "battery_impossible"', 'name = "bench_check"')
    pytester.makefile(".toml", hil_bench_check=scen)
    with VirtualBoard() as vb:  # stands in for the board on the bench
        res = pytester.runpytest_subprocess(
            "--tp-port",
            vb.port,
            "-v",
            "-rs",
            "--tp-report-dir",
            str(tmp_path),
            "-k",
            "not test_run_a_bundled_scenario",  # 60 s of real time
        )
    # the chip test is skipped (another board), the hil_*.toml file is collected and passes
    res.stdout.fnmatch_lines(["*SKIPPED*needs board virtual_chip; the board on * is virtual*"])
    res.stdout.fnmatch_lines(["*hil_bench_check*PASSED*"])
    assert (tmp_path / "bench_check" / "summary.json").exists()


def test_bundled_scenarios_collected_as_tests(pytester):
    res = pytester.runpytest_subprocess("--tp-scenarios", "--collect-only", "-q")
    out = res.stdout.str()
    for p in resources.scenarios_dir().glob("*.toml"):
        assert p.stem in out
    res = pytester.runpytest_subprocess("--tp-scenarios", "-k", "battery_impossible", "-v")
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(["*battery_impossible: FAILED*", "*FAIL settles cool*"])
