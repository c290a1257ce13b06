"""Large values with real processes: intact both ways, and how many copies they cost.

Buffers of 64 KiB or more travel out of band (``payload.py``, ``buffers.py``):
the tests send each kind of buffer to a real slave and back, and count the
copies of a large value on each side with tracemalloc (the master's in this
process, the slave's in its own: ``large_data_slave.py``).
"""

import os
import pickle
import signal
import tracemalloc

import pytest

import large_values
from large_values import MB, describe, numpy, same
from scientific_ms import MasterProcess, TaskRaisedException
from scientific_ms.errors import SerializationError
from scientific_ms.wire.payload import Pickled, dumps_parameters, dumps_result, loads_answer, loads_parameters

SLAVE_SCRIPT = os.path.join(os.path.dirname(__file__), "large_data_slave.py")
needs_numpy = pytest.mark.skipif(numpy is None, reason="numpy is not installed")


@pytest.fixture
def farm(processes, request):
    """A master with one slave of large_data_slave.py."""
    label = f"large-{request.node.name}"[:60].replace("[", "-").replace("]", "")
    master = MasterProcess(label, use_name_server=False, port=0)
    try:
        processes.python(SLAVE_SCRIPT, label)
        master.wait_for_slaves(1, timeout=60)
        yield master
    finally:
        master.shutdown()


@pytest.fixture
def agent_farm(processes, request):
    """A master whose slaves (large_data_slave.py, stored) run behind a node agent."""
    label = f"large-agent-{request.node.name}"[:60].replace("[", "-").replace("]", "")
    master = keeper_master(processes, label)
    try:
        yield master
    finally:
        master.shutdown()


def keeper_master(processes, label):
    """A master of ``label`` whose slaves (large_data_slave.py, stored) are one keeper's 2 workers."""
    master = MasterProcess(label, use_name_server=False, port=0)
    try:
        with open(SLAVE_SCRIPT) as source:
            master.store_slave_code(source.read(), SLAVE_SCRIPT, [SLAVE_SCRIPT, label])
        processes.task_manager("slave", label, "-n", "2", name="keeper")
        master.wait_for_slaves(2, timeout=60)
    except BaseException:
        master.shutdown()
        raise
    return master


def round_trip(master, tag, *values):
    master.requestTask(tag, *values)
    return master.retrieveResult(tag, timeout=60)[2]


def plain_values():
    data = os.urandom(MB)
    writable = bytearray(os.urandom(MB))
    return {
        "bytes": data,
        "bytearray": writable,
        "small bytes": data[:100],
        "memoryview 2-d": memoryview(writable).cast("d", (256, 512)),
        "read-only memoryview": memoryview(data),
        "non-contiguous memoryview": memoryview(writable)[::3],
        "0-d memoryview": memoryview(bytearray(8)).cast("q", ()),
        "empty memoryview": memoryview(b""),
        "nested": {"a": [data, (writable, 3)], "b": "text"},
    }


def numpy_values():
    rng = numpy.random.default_rng(5)
    big = rng.random(MB // 8)
    frozen = big.copy()
    frozen.flags.writeable = False
    tagged = big.reshape(512, 256).view(large_values.Tagged)
    tagged.tag = "kept"
    return {
        "float64": big,
        "Fortran order": numpy.asfortranarray(big.reshape(512, 256)),
        "non-contiguous": big[::3],
        "0-d": numpy.array(2.5),
        "object dtype": numpy.array([1, "two", None, [3]] * 1000, dtype=object),
        "subclass": tagged,
        "masked": numpy.ma.masked_array(big, mask=big < 0.5),
        "read-only": frozen,
        "structured": numpy.zeros(100_000, dtype=[("x", "f8"), ("n", "i4")]),
        "empty": numpy.zeros((0, 3)),
        "int8": rng.integers(-100, 100, 2 * MB, dtype=numpy.int8),
        "scalar": numpy.float32(1.5),
    }


def check_round_trip(master, values):
    """Each value goes to the slave and back unchanged, and the handler sees it as it was."""
    for name, value in values.items():
        (back,) = round_trip(master, "echo", value)
        assert same(back, value) or (name == "nested" and back == value), name
        seen, _ = round_trip(master, "describe", value)
        assert seen[0] == describe(value), name


def test_large_bytes_bytearrays_and_memoryviews_arrive_intact(farm):
    check_round_trip(farm, plain_values())


def test_a_value_named_twice_travels_once_and_arrives_as_one_object(farm):
    data = os.urandom(MB)
    twin = bytearray(data).decode("latin-1").encode("latin-1")   # equal, another object
    payload = dumps_parameters("describe", (data, data, twin))
    assert type(payload) is Pickled and len(payload.buffers) == 2
    _, identical = round_trip(farm, "describe", data, data, twin)
    assert identical == [True, True, False]


@needs_numpy
def test_numpy_arrays_arrive_intact_and_writable_where_they_were(farm):
    check_round_trip(farm, numpy_values())
    array = numpy.arange(MB, dtype=numpy.int64)
    assert (round_trip(farm, "add_one", array) == array + 1).all()


def test_large_values_reach_slaves_behind_an_agent_and_come_back_intact(agent_farm):
    check_round_trip(agent_farm, plain_values())


@needs_numpy
def test_numpy_arrays_reach_slaves_behind_an_agent_and_come_back_intact(agent_farm):
    check_round_trip(agent_farm, numpy_values())
    array = numpy.arange(MB, dtype=numpy.int64)
    assert (round_trip(agent_farm, "add_one", array) == array + 1).all()


@needs_numpy
def test_a_memoryview_that_cannot_be_rebuilt_fails_at_request_task(farm):
    view = memoryview(numpy.zeros(10, dtype=">i4"))     # a non-native format
    with pytest.raises(SerializationError, match="parameter #1 .memoryview."):
        farm.requestTask("echo", view)


def test_copies_of_a_large_value_on_each_side(farm):
    """Master: none for bytes at requestTask and sending, one object received for the result.
    Slave: the parameter received into the object the handler gets, the result sent as it is."""
    size = 16 * MB
    data = os.urandom(size)
    round_trip(farm, "measure", b"")                     # the slave's measures start here
    tracemalloc.start()
    try:
        held = tracemalloc.get_traced_memory()[0]
        farm.requestTask("measure", data)
        requested = tracemalloc.get_traced_memory()[1] - held
        back, received = farm.retrieveResult("measure", timeout=60)[2]
        master_peak = tracemalloc.get_traced_memory()[1] - held
    finally:
        tracemalloc.stop()
    _, sent = round_trip(farm, "measure", b"")
    assert back == data
    assert requested < MB                 # requestTask keeps the bytes object itself
    assert master_peak < 1.25 * size      # one new object: the result, received in place
    assert received < 1.25 * size         # the slave: the parameter, received in place
    assert sent < MB                      # the slave: the result pickled and sent without a copy


def test_buffers_stay_out_of_the_pickle_and_are_snapshots_only_when_mutable():
    data, writable = os.urandom(MB), bytearray(MB)
    payload = dumps_parameters("t", (data, writable, b"small"))
    assert type(payload) is Pickled and len(payload.head) < 1000
    assert payload.buffers[0] is data                        # bytes: the object itself
    assert payload.buffers[1] is not writable and payload.buffers[1] == writable   # a snapshot
    writable[0] = 1                                          # a change after requestTask is not sent
    assert loads_parameters(payload, None)[1][0] == 0
    assert dumps_parameters("t", (b"small",)) == pickle.dumps((b"small",), protocol=5)   # small: plain bytes
    result = dumps_result([data])
    assert type(result) is Pickled and result.buffers[0] is data
    assert loads_answer(result, "t") == [data]


@needs_numpy
def test_a_read_only_array_is_sent_from_its_own_memory_a_writable_one_from_a_snapshot():
    array = numpy.arange(MB, dtype=numpy.float64)
    frozen = array.copy()
    frozen.flags.writeable = False
    writable, read_only = dumps_parameters("t", (array,)).buffers[0], dumps_parameters("t", (frozen,)).buffers[0]
    assert not numpy.shares_memory(numpy.frombuffer(writable, numpy.uint8), array)
    assert numpy.shares_memory(numpy.frombuffer(read_only, numpy.uint8), frozen)
    back = loads_answer(pickle.loads(pickle.dumps(dumps_result(frozen))), "t")   # as the journal keeps it
    assert (back == frozen).all() and not back.flags.writeable


def test_the_journal_keeps_payloads_with_buffers():
    payload = dumps_parameters("t", (os.urandom(MB),))
    again = pickle.loads(pickle.dumps(payload, protocol=5))
    assert loads_parameters(again, None) == loads_parameters(payload, None)


def test_an_unpicklable_parameter_still_fails_at_request_task(farm):
    with pytest.raises(SerializationError, match="parameter #2"):
        farm.requestTask("echo", os.urandom(MB), lambda: 0)


def test_an_exception_with_a_large_buffer_reaches_the_master(farm):
    with pytest.raises(TaskRaisedException):
        round_trip(farm, "add_one", os.urandom(MB))        # bytes += 1: a TypeError in the slave


def test_a_slave_killed_while_large_values_flow_loses_nothing(processes):
    """SIGKILL a slave while 4 MB values stream both ways: every task answered once, intact."""
    master = MasterProcess("large-kill", use_name_server=False, port=0)
    try:
        victim = processes.python(SLAVE_SCRIPT, "large-kill")
        processes.python(SLAVE_SCRIPT, "large-kill")
        master.wait_for_slaves(2, timeout=60)
        sent = {}
        for _ in range(30):
            data = os.urandom(4 * MB)
            sent[master.requestTask("echo", data)] = data
        answers = [master.retrieveResult(timeout=60)]
        victim.kill()
        answers += [master.retrieveResult(timeout=60) for _ in range(29)]
        assert sorted(task_id for task_id, _, _ in answers) == sorted(sent)
        assert all(result == (sent[task_id],) for task_id, _, result in answers)
        assert master.task_manager.counters["delivered"] == 30
    finally:
        master.shutdown()


def relaying_keeper_master(processes, monkeypatch, label):
    """A master of ``label`` served by one keeper of 2 workers that relays them (its threshold 1)."""
    monkeypatch.setenv("SCIENTIFIC_MS_RELAY_WORKERS", "1")
    return keeper_master(processes, label)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("through", ["keeper", "own connections"])
def test_large_values_through_a_relaying_keeper_arrive_once_and_intact(processes, monkeypatch, through):
    """1 MB values streaming both ways through a keeper that relays (``slave/relay.py``): every
    task answered once, intact. With ``SCIENTIFIC_MS_RELAY_DIRECT_BYTES=0`` every byte crosses
    the keeper (its link to each worker carries buffers beside the pickle: ``relay_link.py``),
    and the master counts them as ``relayed_bytes``. By default the exchanges that carry them
    go on each worker's own connection (``slave/relayed.py``): the keeper carries at most the
    first tasks each worker gets before it has answered one, a small part of the bytes."""
    if through == "keeper":
        monkeypatch.setenv("SCIENTIFIC_MS_RELAY_DIRECT_BYTES", "0")
    master = relaying_keeper_master(processes, monkeypatch, f"large-relay-{through.replace(' ', '-')}")
    try:
        sent = {}
        for index in range(40):
            data = os.urandom(MB) if index % 2 else bytearray(os.urandom(MB))
            sent[master.requestTask("echo", data)] = data
        answers = [master.retrieveResult(timeout=60) for _ in sent]
        assert sorted(task_id for task_id, _, _ in answers) == sorted(sent)
        assert all(result == (sent[task_id],) for task_id, _, result in answers)
        counters = master.task_manager.counters
        assert counters["delivered"] == len(sent) and counters["relayed_exchanges"] > 0
        payload_bytes = 2 * len(sent) * MB   # out and back
        if through == "keeper":
            assert counters["relayed_bytes"] >= payload_bytes
        else:
            assert counters["relayed_bytes"] < payload_bytes / 4, \
                f"the keeper carried {counters['relayed_bytes']} of {payload_bytes} bytes of payloads"
    finally:
        master.shutdown()


@pytest.mark.timeout(180)
def test_a_relayed_worker_killed_while_large_values_flow_on_its_own_connection_loses_nothing(
        processes, monkeypatch):
    """SIGKILL a worker of a relaying keeper while 1 MB values stream both ways on the workers'
    own connections (``slave/relayed.py``), tasks still coming: every task answered once, intact."""
    master = relaying_keeper_master(processes, monkeypatch, "large-relay-kill")
    try:
        victim = next(p["pid"] for p in master.task_manager.status()["processes"] if p["role"] == "slave")
        sent = {}

        def request(count):
            for _ in range(count):
                data = os.urandom(MB)
                sent[master.requestTask("echo", data)] = data

        request(20)
        answers = [master.retrieveResult(timeout=60)]
        os.kill(victim, signal.SIGKILL)
        request(20)
        answers += [master.retrieveResult(timeout=60) for _ in range(39)]
        assert sorted(task_id for task_id, _, _ in answers) == sorted(sent)
        assert all(result == (sent[task_id],) for task_id, _, result in answers)
        counters = master.task_manager.counters
        assert counters["delivered"] == 40 and counters["processes_lost"] >= 1
    finally:
        master.shutdown()


def test_parameters_of_plain_values_pickle_as_pickle_does_and_are_still_held_to_the_limit(monkeypatch):
    """Numbers, strings and None take the C pickler alone (no hooks): the same bytes, and the
    same refusal of a value over what one message can carry."""
    from Pyro5 import config as pyro_config
    plain = (1, 2.5, "x", None, True, 1j)
    assert dumps_parameters("t", plain) == pickle.dumps(plain, protocol=5)
    assert loads_parameters(dumps_parameters("t", plain), None) == plain
    monkeypatch.setattr(pyro_config, "MAX_MESSAGE_SIZE", 6 * MB)
    with pytest.raises(SerializationError, match="over the limit"):
        dumps_parameters("t", ("x" * (2 * MB),))
