"""Bad input gets a clear error at its source, and nothing else is lost."""

import json
import logging
import os
import textwrap

import pytest

import scientific_ms
from scientific_ms import (
    ConfigurationError,
    LabelInUseError,
    MasterNotFoundError,
    MasterProcess,
    NoTasksPendingError,
    SerializationError,
    SlaveProcess,
)
from scientific_ms.logs import apply_debug_flag
from scientific_ms.wire import discovery


@pytest.fixture
def master():
    master = MasterProcess("errors", use_name_server=False, port=0)
    yield master
    master.shutdown()


def test_unpicklable_parameter_fails_in_request_task(master):
    master.requestTask("f", 1)
    with pytest.raises(SerializationError, match=r"requestTask\('f', \.\.\.\): parameter #2 \(function\)"):
        master.requestTask("f", 1, lambda x: x)
    assert master.task_manager.counts()["waiting"] == {"f": 1}   # the good task is still there


@pytest.mark.parametrize("label", ["", "has space", "../escape", "x" * 200, None])
def test_bad_labels(label):
    with pytest.raises(ConfigurationError, match="bad label"):
        MasterProcess(label, use_name_server=False, port=0)


def test_second_master_for_a_live_label_is_refused(master):
    with pytest.raises(LabelInUseError, match="already served by a live master"):
        MasterProcess("errors", use_name_server=False, port=0)
    assert discovery.read_label_file("errors")["pid"] == os.getpid()   # the first keeps it


def test_label_file_of_a_dead_master_is_replaced():
    registry = discovery.settings.registry_dir()
    registry.mkdir(mode=0o700, parents=True)
    (registry / "stale.json").write_text(json.dumps({
        "label": "stale", "hostname": "gone-host.invalid", "addresses": ["127.0.0.1"],
        "port": 1, "pid": 999999, "secret": "x"}))
    master = MasterProcess("stale", use_name_server=False, port=0)
    try:
        assert discovery.read_label_file("stale")["pid"] == os.getpid()
    finally:
        master.shutdown()
    assert not (registry / "stale.json").exists()


def test_retrieve_with_nothing_requested_fails_instead_of_hanging(master):
    with pytest.raises(NoTasksPendingError, match="would wait forever"):
        master.retrieveResult()


def test_launch_slaves_without_slave_code(master):
    with pytest.raises(ConfigurationError, match="needs the slaves' code"):
        master.launchSlaveJobs(1)
    with pytest.raises(ConfigurationError, match="whole number"):
        master.launchSlaveJobs(-1)


def test_unknown_label_names_every_place_it_looked():
    with pytest.raises(MasterNotFoundError) as caught:
        SlaveProcess("nobody").start({"do_f": lambda: 0})
    message = str(caught.value)
    assert "SCIENTIFIC_MS_MASTER is not set" in message
    assert "no label file" in message and "nobody.json" in message
    assert "start the master first" in message


def test_a_label_file_on_a_local_disk_is_diagnosed_with_its_path_and_the_fix(tmp_path, monkeypatch):
    """A slave on another node cannot see a label file on the master's local disk: say so, and what to do."""
    from scientific_ms.wire import discovery
    registry = tmp_path / "registry"
    monkeypatch.setenv("SCIENTIFIC_MS_REGISTRY", str(registry))
    with pytest.raises(MasterNotFoundError) as caught:
        SlaveProcess("elsewhere").start({"do_f": lambda: 0})
    message = str(caught.value)
    assert f"no label file {registry / 'elsewhere.json'}" in message
    assert "SCIENTIFIC_MS_REGISTRY to a folder on a shared file system" in message
    assert "-m HOST:PORT" in message
    kind = discovery.filesystem_type(registry)
    if kind in discovery.LOCAL_FILESYSTEMS:
        assert f"{registry} is on a local {kind} file system" in message


def test_slave_without_handlers():
    with pytest.raises(ConfigurationError, match="no task handlers"):
        SlaveProcess("errors").start({})


@pytest.mark.parametrize("period", [0, -1, "fast"])
def test_bad_watchdog_period(period):
    with pytest.raises(ConfigurationError, match="watchdog_period"):
        SlaveProcess("x", watchdog_period=period)


def test_bad_port_setting(monkeypatch):
    monkeypatch.setenv("SCIENTIFIC_MS_PORT", "seventy")
    with pytest.raises(ConfigurationError, match="port must be a whole number"):
        MasterProcess("badport", use_name_server=False)


def test_bad_master_address():
    with pytest.raises(ConfigurationError, match="not a number"):
        SlaveProcess("x", master_host="host:port").start({"do_f": lambda: 0})


def test_state_ids_are_checked(master):
    with pytest.raises(ConfigurationError, match="no global state with id 7"):
        master.deleteGlobalState(7)
    with pytest.raises(ConfigurationError, match="cannot be pickled"):
        master.setGlobalState(f=lambda: 0)


def test_unknown_task_manager_command_is_a_usage_error(capsys):
    from scientific_ms.cli import main
    with pytest.raises(SystemExit) as caught:
        main(["frobnicate"])
    assert caught.value.code == 2


def test_task_manager_for_unknown_label_exits_1_without_traceback(capsys):
    from scientific_ms.cli import main
    assert main(["show", "nobody"]) == 1
    err = capsys.readouterr().err
    assert "no master found for label 'nobody'" in err and "Traceback" not in err


def test_debug_flag_turns_on_debug_logging(monkeypatch):
    monkeypatch.setattr(scientific_ms, "debug", True)
    logger = logging.getLogger("scientific_ms")
    level, handlers = logger.level, list(logger.handlers)
    try:
        apply_debug_flag()
        assert logger.getEffectiveLevel() == logging.DEBUG
    finally:
        logger.setLevel(level)
        logger.handlers[:] = handlers


def test_handler_result_that_cannot_be_pickled_is_reported(master, processes, tmp_path):
    script = tmp_path / "bad_result.py"
    script.write_text(textwrap.dedent("""
        from scientific_ms import startSlaveProcess
        def do_gen():
            return (x for x in range(3))
        startSlaveProcess("errors")
    """))
    processes.python(script)
    master.requestTask("gen")
    with pytest.raises(scientific_ms.TaskRaisedException) as caught:
        master.retrieveResult(timeout=60)
    assert isinstance(caught.value.exception, SerializationError)
    assert "the result of do_gen (generator) cannot be pickled" in str(caught.value.exception)


def test_a_lost_connection_says_so_with_the_masters_address_however_often_it_is_called(master):
    """A connection lost (here: closed) stays lost, and each call says where the master was:
    never an attempt to reach the placeholder address of a proxy made from a socket."""
    from scientific_ms.errors import ConnectionLostError
    from scientific_ms.wire.client import MasterConnection
    connection = MasterConnection("127.0.0.1", master.port, master.secret, "errors")
    assert connection.call("status")["processes"]
    connection.close()
    for _ in range(2):
        with pytest.raises(ConnectionLostError) as caught:
            connection.call("status")
        assert f"127.0.0.1:{master.port}" in str(caught.value) and "connected-socket" not in str(caught.value)
