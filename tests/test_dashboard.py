"""The dashboard, against real jobs, in a real browser (Debian's chromium, driven by selenium).

Real masters and slave processes; ``task_manager dashboard`` runs as a
subprocess as a user starts it. The browser tests skip, with the reason,
where chromium, chromedriver or selenium are missing (``.ci/run`` installs
them as root). DASHBOARD_SCREENSHOTS=DIR saves a screenshot of each page
there (docs/images/ holds the ones the guide shows).
"""

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import wait_for
from scientific_ms import Executor, MasterProcess
from scientific_ms.dashboard.history import History
from scientific_ms.dashboard.options import dashboard_port
from scientific_ms.dashboard.published import dashboard_url
from scientific_ms.dashboard.server import DashboardServer
from scientific_ms.errors import ConfigurationError, TaskRaisedException
from scientific_ms.master.journal_report import journal_progress

HERE = Path(__file__).resolve().parent
SLAVE_SCRIPT = HERE / "slave_script.py"
JOB = HERE / "dashboard_job.py"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = pytest.mark.timeout(120)


def _browser_missing():
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install '.[test]')"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} is missing (apt-get install {package})"
    return None


needs_browser = pytest.mark.skipif(_browser_missing() is not None, reason=str(_browser_missing()))


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One headless chromium for the module; Selenium Manager is never asked to download anything."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    offline = os.environ.get("SE_OFFLINE")
    os.environ["SE_OFFLINE"] = "true"     # and Selenium Manager, should it run, downloads nothing
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,860",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    if offline is None:
        os.environ.pop("SE_OFFLINE", None)
    else:
        os.environ["SE_OFFLINE"] = offline


# ------------------------------------------------------------------ helpers

def text(driver, element_id):
    """An element's text, shown or not (a page not shown has display: none)."""
    from selenium.webdriver.common.by import By
    return driver.find_element(By.ID, element_id).get_attribute("textContent").strip()


def rows(driver, table_id):
    """{data-* key: [cell texts]} of a table's body rows."""
    return driver.execute_script("""
        const out = {};
        for (const tr of document.querySelectorAll(`#${arguments[0]} tbody tr`)) {
            const key = tr.dataset.tag || tr.dataset.pid || tr.dataset.run;
            out[key] = [...tr.children].map(td => td.textContent.trim());
        }
        return out;""", table_id)


def refreshed(driver, timeout=15.0):
    """Wait for the page to draw a newer state than the one it shows now."""
    before = driver.execute_script("return document.body.dataset.updated || ''")
    wait_for(lambda: driver.execute_script("return document.body.dataset.updated || ''") not in ("", before),
             timeout, "the page to refresh")


def go(driver, url, page):
    driver.get(f"{url}#{page}")
    wait_for(lambda: driver.execute_script("return document.body.dataset.page") == page, 15, f"the {page} page")
    refreshed(driver)


def screenshot(driver, name, when=None):
    """Save the page as docs/images/ shows it, if DASHBOARD_SCREENSHOTS names a folder; ``when``:
    a moment worth showing, waited for (briefly, and never asserted: screenshots only)."""
    folder = os.environ.get("DASHBOARD_SCREENSHOTS")
    if folder:
        if when is not None:
            try:
                wait_for(when, 10, "a moment worth a screenshot")
            except AssertionError:
                pass
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / f"dashboard-{name}.png"))


def show_json(label):
    out = subprocess.run([sys.executable, "-m", "scientific_ms", "show", label, "--json"], capture_output=True,
                         text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def start_dashboard(processes, target, *args):
    """``task_manager dashboard TARGET --port 0``; returns (process, URL from its first line)."""
    process = processes.task_manager("dashboard", target, "--port", "0", *args,
                                   name=f"dashboard{len(processes.started)}")

    def first_line():
        lines = processes.output(process).splitlines()
        return lines[0] if lines and lines[0].startswith("http://") else None
    url = wait_for(first_line, 30, "the dashboard's URL")
    return process, url


def get(url, method="GET", headers=None):
    """(status, body) of one request."""
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def page_agrees_with_show(driver, label):
    """The overview's counts and tags against ``task_manager show --json`` (the state must hold still)."""
    refreshed(driver)
    report = show_json(label)
    for name in ("requested", "waiting", "running", "finished", "failed", "retrieved"):
        assert text(driver, f"count-{name}") == str(report["tasks"][name]), name
    tags = rows(driver, "tags")
    by_tag = report["tasks_by_tag"]
    assert set(tags) == set(by_tag["waiting"]) | set(by_tag["running"]) | set(by_tag["finished"]) \
        | set(by_tag["failed"])
    for tag, cells in tags.items():
        waiting, running, finished, failed = map(int, cells[1:5])
        assert waiting == by_tag["waiting"].get(tag, 0) and running == by_tag["running"].get(tag, 0)
        assert finished == by_tag["finished"].get(tag, 0) and failed == by_tag["failed"].get(tag, 0)
    return report


# ------------------------------------------------------------------ a live job

@needs_browser
def test_page_of_a_live_master_agrees_with_show_and_follows_the_tasks(processes, browser):
    master = MasterProcess("dash", use_name_server=False, port=0)
    try:
        for i in range(3):
            master.requestTask("work", 0.3, i)
        for i in range(2):
            master.requestTask("other", i)     # no slave of the test serves it: it keeps waiting
        dashboard, url = start_dashboard(processes, "dash")
        go(browser, url, "overview")
        assert text(browser, "label") == "dash"
        report = page_agrees_with_show(browser, "dash")
        assert report["tasks"]["waiting"] == 5 and set(rows(browser, "tags")) == {"work", "other"}

        slave = processes.python(SLAVE_SCRIPT, "dash", "0.2", name="slave")
        wait_for(lambda: text(browser, "count-finished") == "3", 60, "the page to show 3 tasks finished")
        assert rows(browser, "tags")["work"][1:5] == ["0", "0", "3", "0"]
        page_agrees_with_show(browser, "dash")
        for _ in range(3):
            master.retrieveResult("work")
        wait_for(lambda: text(browser, "count-retrieved") == "3", 30, "the page to show 3 results retrieved")
        assert rows(browser, "tags")["work"][1:5] == ["0", "0", "3", "0"]   # answers stay counted per tag
        page_agrees_with_show(browser, "dash")

        go(browser, url, "slaves")
        slaves = rows(browser, "slaves")
        assert str(slave.pid) in slaves and slaves[str(slave.pid)][-1] == "3"   # tasks done
        go(browser, url, "stream")
        assert browser.execute_script("return document.querySelectorAll('#stream rect').length") >= 1

        master.requestTask("fail", "a remote mistake")   # its traceback reaches the external dashboard
        go(browser, url, "failures")
        wait_for(lambda: "ValueError: a remote mistake" in text(browser, "failures"), 30, "the traceback on the page")
        assert "in do_fail" in text(browser, "failures") and f"PID {slave.pid}" in text(browser, "failures")
        assert "1 task(s) failed" in text(browser, "failures-note")
    finally:
        master.shutdown()
    wait_for(lambda: "master gone" in text(browser, "state") or "job ended" in text(browser, "state"),
             30, "the page to say the master ended")
    dashboard.send_signal(signal.SIGINT)
    code, out = processes.finish(dashboard, 20)
    assert code == 0, out
    assert processes.finish(slave, 20)[0] == 0


@needs_browser
def test_master_served_page_shows_failures_and_a_killed_slave_as_lost(processes, browser):
    master = MasterProcess("served", use_name_server=False, port=0, dashboard=0)
    try:
        url = dashboard_url("served")
        assert url is not None and url.startswith("http://127.0.0.1:")
        human = subprocess.run([sys.executable, "-m", "scientific_ms", "show", "served"], capture_output=True,
                               text=True, timeout=30, stdin=subprocess.DEVNULL).stdout
        assert f"dashboard: {url}" in human
        slaves = [processes.python(SLAVE_SCRIPT, "served", "0.2", name=f"slave{i}") for i in range(2)]
        master.wait_for_slaves(2, timeout=60)
        go(browser, url, "overview")
        for i in range(10):
            master.requestTask("work", 0.3 + 0.1 * (i % 4), i)
        for _ in range(3):
            master.requestTask("spin", 20_000_000)
        master.requestTask("fail", "a bad value")
        screenshot(browser, "overview", lambda: int(text(browser, "count-finished")) >= 5)   # mid-way
        wait_for(lambda: text(browser, "count-finished") == "13" and text(browser, "count-failed") == "1",
                 60, "13 results and a failure on the page")
        page_agrees_with_show(browser, "served")

        go(browser, url, "failures")
        wait_for(lambda: "ValueError: a bad value" in text(browser, "failures"), 20, "the traceback on the page")
        assert "a bad value" not in text(browser, "failures-note")

        master.requestTask("work", 600.0, "long")
        go(browser, url, "slaves")

        def busy_slave():
            for pid, cells in rows(browser, "slaves").items():
                if cells[9].startswith("work_"):
                    return int(pid)
        victim = wait_for(busy_slave, 30, "a slave to run the long task")
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: rows(browser, "gone").get(str(victim), [""] * 6)[5] == "lost", 30,
                 "the killed slave to appear as lost")
        assert str(victim) not in rows(browser, "slaves")
        screenshot(browser, "slaves")
        go(browser, url, "stream")
        assert browser.execute_script("return document.querySelectorAll('#stream rect.lost').length") == 1
        screenshot(browser, "stream")
        go(browser, url, "failures")
        assert any("lost" in line for line in text(browser, "events").splitlines())
        screenshot(browser, "failures")
    finally:
        master.shutdown()
    assert dashboard_url("served") is None   # show no longer names it
    for slave in slaves:
        processes.finish(slave, 20)


@needs_browser
def test_journal_view_of_a_killed_master(processes, browser, tmp_path):
    journal = tmp_path / "job.journal"
    job = processes.python(JOB, "journaled", journal, name="job")
    wait_for(lambda: "READY" in processes.output(job), 90, "the job to answer its quick tasks")
    # the journal writes its groups behind the master's back: wait for the six answers on disk
    wait_for(lambda: journal_progress(journal)["tasks"]["finished"] == 4 and
             journal_progress(journal)["tasks"]["failed"] == 2, 30, "the answers in the journal")
    os.killpg(job.pid, signal.SIGKILL)    # the master and the slaves it spawned
    job.wait(10)
    # Run it again: the second run resumes the six answers of the first, then is killed too.
    job = processes.python(JOB, "journaled", journal, name="job-again")
    wait_for(lambda: "READY" in processes.output(job), 90, "the second run to replay the answers")
    os.killpg(job.pid, signal.SIGKILL)
    job.wait(10)
    dashboard, url = start_dashboard(processes, str(journal))
    go(browser, url, "journal")
    assert text(browser, "label") == "journaled"
    tags = rows(browser, "journal-tags")
    assert {tag: cells[1:5] for tag, cells in tags.items()} == {
        "fail": ["2", "0", "2", "0"], "slow": ["2", "0", "0", "2"], "square": ["4", "4", "0", "0"]}
    runs = rows(browser, "runs")
    assert list(runs) == ["1", "2"] and runs["1"][4] == runs["2"][4] == "killed (it never ended)"
    assert runs["1"][5:7] == ["0 answer(s)", "6"] and runs["2"][5:7] == ["6 answer(s)", "0"]
    failures = text(browser, "journal-failures")
    assert failures.count("ValueError: cannot use bad input") == 2
    assert "parameters:" not in failures                 # values only with --show-values
    assert text(browser, "journal-master").startswith("not running")
    screenshot(browser, "journal")
    dashboard.send_signal(signal.SIGINT)
    assert processes.finish(dashboard, 20)[0] == 0

    dashboard, url = start_dashboard(processes, str(journal), "--show-values")
    go(browser, url, "journal")
    assert "parameters: ('bad input 0',)" in text(browser, "journal-failures")
    dashboard.send_signal(signal.SIGINT)
    assert processes.finish(dashboard, 20)[0] == 0


# ------------------------------------------------------------------ the page's data, without a browser

def test_external_dashboard_gets_the_tracebacks_of_a_live_masters_failures(processes):
    master = MasterProcess("remote-failures", use_name_server=False, port=0)
    try:
        slave = processes.python(SLAVE_SCRIPT, "remote-failures", name="slave")
        for i in range(3):
            master.requestTask("fail", f"mistake {i}")
        master.requestTask("work", 0.0, "a-value-never-shown")
        raised = 0
        for _ in range(4):   # retrieved: the record outlives them
            try:
                master.retrieveResult()
            except TaskRaisedException:
                raised += 1
        assert raised == 3
        dashboard, url = start_dashboard(processes, "remote-failures")
        code, body = get(url.replace("/?token=", "/api/state?token="))
        assert code == 200, body
        state = json.loads(body)
        failures = state["failures"]
        assert sorted(f["task_id"] for f in failures) == [f"fail_{i}" for i in range(1, 4)]
        for failure in failures:
            i = int(failure["task_id"].split("_")[1]) - 1
            assert failure["tag"] == "fail" and failure["pid"] == slave.pid
            assert f"ValueError: mistake {i}" in failure["traceback"] and "in do_fail" in failure["traceback"]
        assert "a-value-never-shown" not in body.decode()   # values never
        assert "failures" not in show_json("remote-failures")   # show does not carry them
    finally:
        master.shutdown()
    dashboard.send_signal(signal.SIGINT)
    assert processes.finish(dashboard, 20)[0] == 0
    processes.finish(slave, 20)


def test_the_master_keeps_the_last_failures_only():
    from scientific_ms.core import failures
    from scientific_ms.core.manager import TaskManager
    from scientific_ms.wire.payload import dumps_value
    manager = TaskManager()
    slave_id = manager.register_process("slave", {"host": "node", "pid": 42}, ["fail"])
    ids = manager.add_tasks("fail", [dumps_value(i) for i in range(failures.LIMIT + 50)])
    huge = "x" * (failures.MAX_TRACEBACK * 3) + "ValueError: the end\n"
    for _ in ids:   # one at a time: the scheduler gives a new tag's tasks so
        task, = manager.take_tasks(slave_id)
        manager.store_answers(slave_id, [(task.task_id, task.assignment, False, dumps_value(ValueError()), huge)])
    assert "failures" not in manager.status()
    kept = manager.status(failures=True)["failures"]
    assert [f["task_id"] for f in kept] == ids[-failures.LIMIT:]
    assert kept[0]["slave"] == slave_id and (kept[0]["host"], kept[0]["pid"]) == ("node", 42)
    assert kept[0]["traceback"].endswith("ValueError: the end\n")
    assert len(kept[0]["traceback"]) < failures.MAX_TRACEBACK + 100

    # failed by the master (its slave was lost), and resumed from a journal
    manager = TaskManager(max_slave_losses=1)
    slave_id = manager.register_process("slave", {"host": "node", "pid": 43}, ["work"])
    lost_id, = manager.add_tasks("work", [dumps_value(0)])
    manager.take_tasks(slave_id)
    manager.process_lost(slave_id, "killed")
    journaled_id = manager.add_answered_task("work", False, dumps_value(ValueError()), "ValueError: before\n")
    lost, journaled = manager.status(failures=True)["failures"]
    assert lost["task_id"] == lost_id and lost["slave"] == slave_id and "SlaveLostError" in lost["traceback"]
    assert journaled["task_id"] == journaled_id and journaled["slave"] is None


# ------------------------------------------------------------------ security, without a browser

class StillSource:
    kind = "live"

    def __init__(self):
        self.reads = 0

    def state(self):
        self.reads += 1
        return {"kind": "live", "now": 0}


@pytest.fixture
def served():
    source = StillSource()
    server = DashboardServer(source, port=0)
    server.start()
    yield server, source
    server.close()


def test_every_request_needs_the_token(served):
    server, source = served
    base = f"http://127.0.0.1:{server.port}"
    token = server.access.token
    assert server.url == f"{base}/?token={token}"
    for path in ("/", "/app.js", "/api/state", "/nowhere"):
        assert get(base + path)[0] == 401, path
        assert get(f"{base}{path}?token=wrong")[0] == 403, path
        assert get(base + path, headers={"Cookie": f"{server.access.cookie_name}=wrong"})[0] == 403, path
    assert source.reads == 0
    assert get(f"{base}/api/state?token={token}") == (200, b'{"kind": "live", "now": 0}')
    assert get(f"{base}/api/state", headers={"Authorization": f"Bearer {token}"})[0] == 200
    assert get(f"{base}/app.js", headers={"Cookie": f"{server.access.cookie_name}={token}"})[0] == 200
    status, page = get(f"{base}/?token={token}")
    assert status == 200 and b"<script src=\"app.js\"" in page and b"http" not in page.split(b"<body>")[1]


def test_malformed_requests_get_a_4xx_and_change_nothing(served):
    server, source = served
    base = f"http://127.0.0.1:{server.port}"
    token = server.access.token
    assert get(f"{base}/api/state?token={token}", method="POST")[0] == 405
    assert get(f"{base}/api/state?token={token}", method="DELETE")[0] == 405
    assert get(f"{base}/api/state?token={token}&token={token}")[0] == 400
    assert get(f"{base}/api/state?token={token}&x=1")[0] == 400
    assert get(f"{base}/api/state?token={token}&&&=")[0] == 400
    assert get(f"{base}/api/state?token=" + "x" * 3000)[0] == 414
    assert get(f"{base}/nowhere?token={token}")[0] == 404
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"\x16\x03\x01 garbage that is no request\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 400")
    assert source.reads == 0


def test_listens_on_loopback_and_warns_when_told_otherwise(caplog):
    server = DashboardServer(StillSource(), port=0)
    try:
        assert server.host == "127.0.0.1" and server._httpd.server_address[0] == "127.0.0.1"
    finally:
        server.close()
    with caplog.at_level(logging.WARNING, logger="scientific_ms.dashboard"):
        server = DashboardServer(StillSource(), host="0.0.0.0", port=0)
        server.close()
    assert "reachable from other machines" in caplog.text and "SSH tunnel" in caplog.text


def test_dashboard_option_and_environment(monkeypatch):
    assert dashboard_port(None) is None and dashboard_port(False) is None
    assert dashboard_port(True) == 8787 and dashboard_port(9000) == 9000 and dashboard_port(0) == 0
    monkeypatch.setenv("SCIENTIFIC_MS_DASHBOARD", "yes")
    assert dashboard_port(None) == 8787
    monkeypatch.setenv("SCIENTIFIC_MS_DASHBOARD", "8800")
    assert dashboard_port(None) == 8800
    monkeypatch.setenv("SCIENTIFIC_MS_DASHBOARD", "off")
    assert dashboard_port(None) is None
    monkeypatch.setenv("SCIENTIFIC_MS_DASHBOARD", "maybe")
    with pytest.raises(ConfigurationError, match="SCIENTIFIC_MS_DASHBOARD='maybe'"):
        dashboard_port(None)
    with pytest.raises(ConfigurationError, match="port number"):
        dashboard_port(70000)


def test_environment_and_executor_start_a_masters_dashboard(monkeypatch):
    monkeypatch.setenv("SCIENTIFIC_MS_DASHBOARD", "1")
    master = MasterProcess("by-environment", use_name_server=False, port=0)
    try:
        url = dashboard_url("by-environment")
        assert url is not None and get(url)[0] == 200
    finally:
        master.shutdown()
    assert dashboard_url("by-environment") is None
    monkeypatch.delenv("SCIENTIFIC_MS_DASHBOARD")
    with Executor(dashboard=0, use_name_server=False, port=0) as executor:
        url = dashboard_url(executor.label)
        assert url is not None and get(url.split("?")[0] + "api/state")[0] == 401
    with Executor(use_name_server=False, port=0) as executor:
        assert dashboard_url(executor.label) is None


def test_a_dashboard_that_cannot_start_leaves_no_master(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigurationError, match=f"cannot listen on 127.0.0.1:{port}"):
            MasterProcess("no-port", use_name_server=False, port=0, dashboard=port,
                          journal=str(tmp_path / "kept.journal"))
    with pytest.raises(ConfigurationError, match="port number"):
        MasterProcess("no-port", use_name_server=False, port=0, dashboard="yes")
    assert (tmp_path / "kept.journal").exists()
    MasterProcess("no-port", use_name_server=False, port=0).shutdown()   # the label is free again


# ------------------------------------------------------------------ the history, from made-up statuses

def status(processes, finished=0, lost=0):
    return {"processes": processes, "counters": {"finished": finished, "processes_lost": lost}}


def slave(process_id, running=(), done=0):
    return {"id": process_id, "role": "slave", "pid": 100 + process_id, "host": "node", "tags": ["work"],
            "tasks_done": done, "running": [{"task_id": t, "tag": "work", "seconds": 1.0} for t in running]}


def test_history_follows_tasks_and_names_lost_slaves():
    history = History()
    history.update(status([slave(1, ["work_1"]), slave(2, ["work_2"])]), 10.0)
    history.update(status([slave(1, ["work_3"], done=3), slave(2, ["work_2"])], finished=3), 11.0)
    spans = history.stream(11.0)
    ended = [s for s in spans if s["end"] is not None]
    assert [(s["task_id"], s["start"], s["end"]) for s in ended] == [("work_1", 9.0, 11.0), (None, 10.0, 11.0)]
    assert ended[1]["count"] == 2         # two tasks too short to be seen running
    history.update(status([slave(1, [], done=4)], finished=4, lost=1), 12.0)
    assert [(g["id"], g["verdict"]) for g in history.gone] == [(2, "lost")]
    lost_span = next(s for s in history.stream(12.0) if s["task_id"] == "work_2")
    assert lost_span["lost"] and lost_span["end"] == 12.0
    assert history.throughput() == [(10.0, 0), (11.0, 3), (12.0, 4)]


def test_history_is_bounded():
    history = History(max_spans=50, max_events=20, max_points=30, max_gone=5)
    for step in range(1000):
        procs = [slave(step, [f"work_{step}"], done=step)]
        history.update(status(procs, finished=step, lost=step // 2), float(step))
    assert len(history.spans) == 50 and len(history.events) == 20
    assert len(history.points) == 30 and len(history.gone) == 5
