"""The master side of tests/test_runtime.py: a master in a process of its own, driven by the test.

The test listens on a loopback socket (``RUNTIME_CONTROL=HOST:PORT`` in the
master's environment) and sends JSON lines; the master answers the same way:

    test -> master                                  master -> test
    {"op": "submit", "key", "kind", "arg",          {"op": "submitted", "key", "task_id"}
     "log_dir", "time_limit"}                       {"op": "result", "key" | "task_id", "ok",
                                                      "value" | "error" + "message", "t"}
    {"op": "status", "id"}                          {"op": "status", "id", "status"}
    {"op": "end"}                                   (the master ends: run() returns, ...)

``t`` is ``time.monotonic()`` when the master got the result (one clock for the
whole machine). A closed control socket ends the master too.
"""

import functools
import json
import os
import socket
import threading
import time

import work

from scientific_ms import TaskRaisedException


class Control:
    def __init__(self):
        host, port = os.environ["RUNTIME_CONTROL"].rsplit(":", 1)
        self._socket = socket.create_connection((host, int(port)))
        self._reader = self._socket.makefile("rb")
        self._lock = threading.Lock()
        self.send(op="hello", pid=os.getpid())

    def send(self, **event):
        line = (json.dumps(event, default=str) + "\n").encode()
        with self._lock:
            try:
                self._socket.sendall(line)
            except OSError:
                pass   # the test went away; the master ends when it reads EOF

    def commands(self):
        """The commands until ``end`` or EOF."""
        for line in self._reader:
            command = json.loads(line)
            if command["op"] == "end":
                return
            yield command


def result_event(ok, value=None, error=None, **where):
    event = dict(op="result", ok=ok, t=time.monotonic(), **where)
    if ok:
        event["value"] = value
    else:
        event["error"] = type(error).__name__
        event["message"] = str(error)
    return event


def serve_master(master):
    """Drive a MasterProcess (its ``run()``, or a master script) until the test says ``end``."""
    control = Control()
    submitted = threading.Semaphore(0)

    def collect():
        while True:
            submitted.acquire()
            try:
                task_id, tag, value = master.retrieveResult("run")
            except TaskRaisedException as raised:
                control.send(**result_event(False, error=raised.exception, task_id=raised.task_id))
                continue
            except Exception as error:   # the master ends
                control.send(op="collector_ended", error=repr(error))
                return
            if task_id is None:   # terminated
                return
            control.send(**result_event(True, value, task_id=task_id))

    threading.Thread(target=collect, daemon=True).start()
    for command in control.commands():
        if command["op"] == "status":
            control.send(op="status", id=command["id"], status=master.task_manager.status())
        elif command["op"] == "submit":
            task_id = master.request_task("run", command["kind"], command["key"], command["arg"],
                                          command["log_dir"], time_limit=command["time_limit"])
            control.send(op="submitted", key=command["key"], task_id=task_id)
            submitted.release()


def serve_executor(executor):
    """Drive an Executor until the test says ``end``; the faults are submitted functions."""
    control = Control()

    def report(key, future):
        error = future.exception()
        if error is None:
            control.send(**result_event(True, future.result(), key=key))
        else:
            control.send(**result_event(False, error=error, key=key))

    for command in control.commands():
        if command["op"] == "status":
            control.send(op="status", id=command["id"], status=executor.master.task_manager.status())
        elif command["op"] == "submit":
            target = executor if command["time_limit"] is None else \
                executor.options(time_limit=command["time_limit"])
            future = target.submit(work.run, command["kind"], command["key"], command["arg"], command["log_dir"])
            control.send(op="submitted", key=command["key"], task_id=None)
            future.add_done_callback(functools.partial(report, command["key"]))
