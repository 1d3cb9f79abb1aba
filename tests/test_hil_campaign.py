"""Campaigns: expansion and checks before any board starts, the local pool and a Dask cluster
of 2 workers, no VM outliving a killed worker, and the bundled fault campaign CI runs."""

import csv
import os
import signal
import subprocess
import sys
import time

import pytest

from thermopilot.hil import campaign

THERMOPILOT = [sys.executable, "-m", "thermopilot.host.cli"]

SMALL = """
name = "small"
seed = 3

[[group]]
name = "bat"
base = "battery_impossible"
base_criteria = "replace"
set = { duration_s = 40.0 }

[[group.sweep]]
path = "params.cool.kp"
values = [0.2, 0.4]

[[group.faults]]
kind = "sensor_open"
t_s = [10.0, 20.0]
expect = "sensor_open"
within_s = 0.2

[[group.faults]]
kind = "sensor_short"
t_s = 10.0
expect = "sensor_short"
within_s = 0.2
"""


def write(tmp_path, text, name="c.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_expansion_grid_rows_and_added_criteria(tmp_path):
    camp, cases = campaign.load(write(tmp_path, SMALL))
    assert camp["name"] == "small" and len(cases) == 2 * 3
    assert [c["sweep"]["params.cool.kp"] for c in cases] == [0.2] * 3 + [0.4] * 3
    c = cases[1]
    assert c["raw"]["params"]["cool.kp"] == 0.2 and c["raw"]["duration_s"] == 40.0
    assert c["raw"]["faults"] == [{"kind": "sensor_open", "t_s": 20.0}]
    kinds = [k["kind"] for k in c["raw"]["criteria"]]
    assert kinds == ["no_fault", "latch_latency", "actuator_safe_at_end"]
    assert c["raw"]["criteria"][0]["before_s"] == pytest.approx(19.499)
    assert len({c["id"] for c in cases}) == 6


def test_a_fault_row_names_the_controllers_safe_values(tmp_path):
    text = SMALL.replace(
        'expect = "sensor_short"\nwithin_s = 0.2',
        'expect = "sensor_short"\nwithin_s = 0.2\nsafe = { pump = [0.0, 0.5] }',
    )
    _camp, cases = campaign.load(write(tmp_path, text))
    ends = [c["raw"]["criteria"][-1] for c in cases]
    assert all(e["kind"] == "actuator_safe_at_end" for e in ends)
    assert [e.get("safe") for e in ends] == ([None, None, {"pump": [0.0, 0.5]}]) * 2
    bad = text.replace("safe = { pump = [0.0, 0.5] }", "safe = { fan = 1.0 }")
    with pytest.raises(campaign.CampaignError, match="safe names actuator 'fan'"):
        campaign.load(write(tmp_path, bad, "d.toml"))


def test_random_sweeps_are_seeded(tmp_path):
    text = SMALL.replace("values = [0.2, 0.4]", "min = 0.1\nmax = 0.5").replace(
        "set = { duration_s = 40.0 }", "set = { duration_s = 40.0 }\nsamples = 4"
    )
    _c, a = campaign.load(write(tmp_path, text))
    _c, b = campaign.load(write(tmp_path, text, "d.toml"))
    va = [c["sweep"]["params.cool.kp"] for c in a]
    assert va == [c["sweep"]["params.cool.kp"] for c in b] and len(set(va)) == 4
    assert all(0.1 <= v <= 0.5 for v in va)
    _c, c2 = campaign.load(write(tmp_path, text.replace("seed = 3", "seed = 4"), "e.toml"))
    assert [c["sweep"]["params.cool.kp"] for c in c2] != va


@pytest.mark.parametrize(
    "change, message",
    [
        (('path = "params.cool.kp"', 'path = "cool.kp"'), "path 'cool.kp'; expected"),
        (('kind = "sensor_short"', 'kind = "sensor_shrt"'), "kind = 'sensor_shrt'"),
        (("within_s = 0.2\n\n[[group.faults]]", "\n[[group.faults]]"), "expect needs within_s"),
        (('base = "battery_impossible"', 'base = "nope"'), "base = 'nope'"),
        (("t_s = [10.0, 20.0]", "t_s = [10.0, 50.0]"), "t_s = 50 is not before the end"),
        (("seed = 3", "seed = 3\nbogus = 1"), "unknown key\\(s\\) bogus"),
        (("values = [0.2, 0.4]", "values = [0.2, 500.0]"), None),
    ],
)
def test_a_wrong_campaign_fails_before_any_board(tmp_path, change, message):
    p = write(tmp_path, SMALL.replace(*change))
    if message is None:  # out of the board's range: known only to the board, before the run
        campaign.load(p)
        return
    with pytest.raises(campaign.CampaignError, match=message):
        campaign.load(p)
    t0 = time.monotonic()
    res = subprocess.run(
        THERMOPILOT + ["hil", "campaign", str(p), "--report-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert not (tmp_path / "small").exists()  # nothing ran, nothing written
    print("refused in %.2f s" % (time.monotonic() - t0))


def test_the_bundled_fault_campaign_is_big_enough():
    _camp, cases = campaign.load(campaign.campaigns_dir() / "faults_ci.toml")
    assert len(cases) >= 100
    systems = {c["raw"]["plant"]["model"] for c in cases}
    assert systems == {"battery_loop", "chip_cooler", "heatpump_r290"}
    kinds = {c["fault_kind"] for c in cases}
    assert len(kinds) >= 14
    for c in cases:
        assert c["expect"]  # every case states what the board must do


# -- running: processes, leaks -----------------------------------------------------------------


def our_vms(root):
    """Live micropython processes whose working directory is under ``root``."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cwd = os.readlink("/proc/%s/cwd" % pid)
            with open("/proc/%s/stat" % pid) as f:
                stat = f.read()
        except OSError:
            continue
        state = stat.rsplit(")", 1)[1].split()[0]
        if "micropython" in stat and cwd.startswith(str(root)) and state != "Z":
            out.append(int(pid))
    return out


def children(pid):
    out = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def wait_for(cond, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    return cond()


def slow_campaign(tmp_path):
    text = SMALL.replace("set = { duration_s = 40.0 }", "set = { duration_s = 200.0 }")
    text = text.replace("values = [0.2, 0.4]", "values = [0.3]")
    return write(tmp_path, text)


def read_results(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_local_pool_survives_a_killed_worker_without_leaking_its_vm(tmp_path):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = dict(os.environ, TMPDIR=str(tmpdir))
    proc = subprocess.Popen(
        THERMOPILOT
        + ["hil", "campaign", str(slow_campaign(tmp_path)), "--workers", "2"]
        + ["--report-dir", str(tmp_path / "rep")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        vms = wait_for(lambda: our_vms(tmpdir), 60)
        assert vms, "no VM started"
        vm = vms[0]
        worker = int(open("/proc/%d/stat" % vm).read().rsplit(")", 1)[1].split()[1])
        assert worker in children(proc.pid)  # a worker of the campaign started it
        os.kill(worker, signal.SIGKILL)
        assert wait_for(lambda: vm not in our_vms(tmpdir), 5), "the VM outlived its worker"
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out + err
    rows = read_results(tmp_path / "rep" / "small" / "results.csv")
    assert len(rows) == 3 and all(r["passed"] == "True" for r in rows)  # the case ran again
    assert our_vms(tmpdir) == []
    assert list(tmpdir.glob("thermopilot-vboard-*")) == []  # nor its board's filesystem


def test_ctrl_c_stops_the_workers_and_their_boards(tmp_path):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    proc = subprocess.Popen(
        THERMOPILOT
        + ["hil", "campaign", str(slow_campaign(tmp_path)), "--workers", "2"]
        + ["--report-dir", str(tmp_path / "rep")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, TMPDIR=str(tmpdir)),
    )
    assert wait_for(lambda: our_vms(tmpdir), 60)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "campaign interrupted" in err and "Traceback" not in err
    assert wait_for(lambda: our_vms(tmpdir) == [], 5)
    assert (tmp_path / "rep" / "small" / "results.csv").exists()


def test_dask_cluster_of_two_workers_with_a_killed_worker(tmp_path):
    distributed = pytest.importorskip("distributed")
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    old = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(tmpdir)  # the workers inherit it: their VMs' directories
    try:
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        )
    finally:
        if old is None:
            del os.environ["TMPDIR"]
        else:
            os.environ["TMPDIR"] = old
    client = distributed.Client(cluster)
    try:
        pids = client.run(os.getpid)
        assert len(pids) == 2
        proc = subprocess.Popen(
            THERMOPILOT
            + ["hil", "campaign", str(slow_campaign(tmp_path))]
            + ["--cluster", cluster.scheduler_address, "--report-dir", str(tmp_path / "rep")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            vms = wait_for(lambda: our_vms(tmpdir), 60)
            assert vms, "no VM started on the cluster"
            vm = vms[0]
            worker = int(open("/proc/%d/stat" % vm).read().rsplit(")", 1)[1].split()[1])
            assert worker in pids.values()  # a Dask worker process started it
            os.kill(worker, signal.SIGKILL)
            assert wait_for(lambda: vm not in our_vms(tmpdir), 5), "the VM outlived its worker"
            out, err = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, out + err
        assert "cluster tcp://" in out
        rows = read_results(tmp_path / "rep" / "small" / "results.csv")
        assert len(rows) == 3 and all(r["passed"] == "True" for r in rows)
    finally:
        client.close()
        cluster.close()
    assert wait_for(lambda: our_vms(tmpdir) == [], 5)


def test_parquet_results_and_a_failing_case(tmp_path):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    text = SMALL.replace(
        'expect = "sensor_short"', 'expect = "over_temperature"'
    )  # the board reports the short as sensor_short: this case must fail
    p = write(tmp_path, text.replace("values = [0.2, 0.4]", "values = [0.3]"))
    res = subprocess.run(
        THERMOPILOT
        + ["hil", "campaign", str(p), "--report-dir", str(tmp_path / "rep")]
        + ["--results", str(tmp_path / "r.parquet")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 1, res.stdout + res.stderr
    t = pq.read_table(str(tmp_path / "r.parquet")).to_pylist()
    assert [r["passed"] for r in t] == [True, True, False]
    assert "FAILED bat-002" in res.stdout and "latch_latency over_temperature" in res.stdout
    assert str(tmp_path / "rep" / "small" / "bat-002") in res.stdout.replace("\n", "")
    assert (tmp_path / "rep" / "small" / "bat-002" / "plot.png").exists()  # failed: plotted
    assert not (tmp_path / "rep" / "small" / "bat-000" / "plot.png").exists()
    assert (tmp_path / "rep" / "small" / "summary.png").exists()


def test_the_fault_campaign_passes(tmp_path):
    """The bundled fault campaign (hil/campaigns/faults_ci.toml), as CI runs it."""
    t0 = time.monotonic()
    res = subprocess.run(
        THERMOPILOT
        + ["hil", "campaign", "faults_ci", "--workers", "2", "--report-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    wall = time.monotonic() - t0
    rows = read_results(tmp_path / "faults_ci" / "results.csv")
    failed = [r for r in rows if r["passed"] != "True"]
    assert res.returncode == 0 and not failed, res.stdout[-3000:] + res.stderr[-2000:]
    assert len(rows) >= 100
    for r in rows:
        if r["expect"] != "none":
            assert float(r["latency_s"]) <= float(r["within_s"])
            assert r["safe_at_end"] == "True"
    print("fault campaign: %d cases in %.0f s on 2 workers" % (len(rows), wall))
