"""Notebooks and REPLs: examples/*.ipynb executed headless in a real Jupyter kernel, a killed
kernel's slaves end, and the by-value slave code in a plain ``python -c`` process.

The kernel nbclient starts must be this very Python (the one with this tree on its
PYTHONPATH): installing ipykernel into a virtual environment registers no kernel, so
the tests write a kernelspec pointing at ``sys.executable`` into a JUPYTER_PATH of their own.
"""

import io
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

from conftest import EXAMPLES, descendants_gone
from scientific_ms import MasterProcess, SlaveProcess
from scientific_ms.errors import ConfigurationError, LabelInUseError
from scientific_ms.interactive import handler_table, handlers_code, slave_class_code
from scientific_ms.progress_notebook import NotebookBar, in_ipython_kernel

pytestmark = pytest.mark.timeout(240)

KERNEL = "scientific-ms-test"
CELL_TIMEOUT = 120     # seconds one cell may take (a few on an idle machine)
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))


@pytest.fixture
def kernel_name(tmp_path, monkeypatch):
    """A kernelspec running this Python, found through a JUPYTER_PATH of this test's own."""
    pytest.importorskip("ipykernel")
    pytest.importorskip("nbclient")
    folder = tmp_path / "jupyter" / "kernels" / KERNEL
    folder.mkdir(parents=True)
    (folder / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "scientific_ms tests", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    from jupyter_client.kernelspec import KernelSpecManager
    assert KernelSpecManager().get_kernel_spec(KERNEL).argv[0] == sys.executable
    return KERNEL


def text_of(cell, name=None):
    """The text a cell printed: its stdout and stderr streams (or only ``name``)."""
    return "".join(output.get("text", "") for output in cell.get("outputs", [])
                   if output.get("output_type") == "stream" and (name is None or output["name"] == name))


def cell_with(nb, text):
    """(index, cell) of the one code cell whose source contains ``text``."""
    found = [(index, cell) for index, cell in enumerate(nb.cells)
             if cell.cell_type == "code" and text in cell.source]
    assert len(found) == 1, f"{len(found)} code cells contain {text!r}"
    return found[0]


def test_there_is_a_notebook_example():
    assert [path.name for path in NOTEBOOKS] == ["notebook_demo.ipynb"]


def test_notebook_demo_runs_headless_and_its_cells_run_again(kernel_name, tmp_path):
    import nbformat
    from nbclient import NotebookClient
    workdir = tmp_path / "examples"
    shutil.copytree(EXAMPLES, workdir, ignore=shutil.ignore_patterns("__pycache__"))
    nb = nbformat.read(workdir / "notebook_demo.ipynb", as_version=4)
    client = NotebookClient(nb, kernel_name=kernel_name, timeout=CELL_TIMEOUT,
                            resources={"metadata": {"path": str(workdir)}})
    job_index, job_cell = cell_with(nb, "runJob(")
    cubes_index, cubes_cell = cell_with(nb, "initializeMasterProcess(")
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            if index == cubes_index + 1:   # before the master.shutdown() cell: run both cells again
                client.execute_cell(job_cell, job_index)
                client.execute_cell(cubes_cell, cubes_index)
                assert "ending this process's earlier master" in text_of(cubes_cell, "stderr"), \
                    text_of(cubes_cell)
            client.execute_cell(cell, index)
    squares = [x * x + 100 for x in range(10)]
    assert f"squares: {squares}" in text_of(job_cell, "stdout"), text_of(job_cell)
    assert "cubes: [0, 1, 8, 27, 64]" in text_of(cubes_cell, "stdout"), text_of(cubes_cell)
    assert "mapped: [0, 1, 8, 27, 64]" in text_of(nb.cells[-1], "stdout"), text_of(nb.cells[-1])
    # tqdm's bar, not terminal escapes: "notebook-squares: 100%|...| 10/10"
    bar = text_of(job_cell, "stderr")
    assert re.search(r"notebook-squares: 100%.*10/10", bar), bar
    assert "\x1b[" not in bar, bar


def _slaves_of(pid):
    """The PIDs of the slave processes below ``pid`` (``python -m scientific_ms slave ...``)."""
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if "slave" in child.cmdline():
                found.append(child.pid)
        except psutil.NoSuchProcess:
            pass
    return found


@pytest.mark.parametrize("how", ["killed", "shut down"])
def test_a_kernel_that_ends_takes_its_slaves_with_it(how, kernel_name, tmp_path):
    from jupyter_client import KernelManager
    manager = KernelManager(kernel_name=kernel_name)
    manager.start_kernel(cwd=str(tmp_path))
    client = manager.client()
    client.start_channels()
    slaves = []
    try:
        client.wait_for_ready(timeout=CELL_TIMEOUT)
        reply = client.execute_interactive(textwrap.dedent("""\
            import os
            from scientific_ms import initializeMasterProcess
            def cube(x):
                return x ** 3
            master = initializeMasterProcess("kernel-killed", handlers=[cube])
            master.launchSlaveJobs(2)
            master.wait_for_slaves(2, timeout=60)
            master.requestTask("cube", 3)
            print("result", master.retrieveResult("cube")[2], "pid", os.getpid())
            """), timeout=CELL_TIMEOUT, output_hook=lambda message: None)
        assert reply["content"]["status"] == "ok", reply["content"]
        kernel = manager.provisioner.process.pid
        slaves = _slaves_of(kernel)
        assert len(slaves) >= 2, slaves   # each slave's processes (a keeper and its worker)
        if how == "killed":
            os.kill(kernel, signal.SIGKILL)
        else:
            manager.shutdown_kernel(now=False)   # as Jupyter's "shut down" or "restart" does
        assert descendants_gone(slaves, 30.0) == [], f"the {how} kernel's slaves still run"
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
        for pid in descendants_gone(slaves, 0.1):   # reap whatever a failure left
            os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------------ without a kernel

def run_c(processes, code, timeout=90.0):
    """Run ``python -c code`` (no script file: as a REPL would); its output, after checking it exited 0."""
    process = processes.python("-c", textwrap.dedent(code))
    status, out = processes.finish(process, timeout)
    assert status == 0, out
    return out


def test_runjob_without_a_script_sends_the_slave_class_by_value(processes):
    out = run_c(processes, """\
        import os
        from scientific_ms import MasterProcess, SlaveProcess, runJob
        OFFSET = 1000

        class Job(MasterProcess):
            def run(self):
                for x in range(6):
                    self.requestTask("square", x)
                return sorted(self.retrieveResult("square")[2] for _ in range(6))

        class Worker(SlaveProcess):
            def do_square(self, x):
                return (x * x + OFFSET, os.getpid() != MASTER)

        MASTER = os.getpid()
        print("first", runJob("by-value", Job, Worker, launch_slaves=2))
        OFFSET = 2000   # the second run sends the class (and its globals) again
        print("second", runJob("by-value", Job, Worker, launch_slaves=2))
        """)
    assert f"first {[(x * x + 1000, True) for x in range(6)]}" in out, out
    assert f"second {[(x * x + 2000, True) for x in range(6)]}" in out, out


def test_handlers_by_value_served_by_task_manager_slave_and_a_rerun_ends_the_earlier_master(processes):
    out = run_c(processes, """\
        import subprocess, sys
        from scientific_ms import initializeMasterProcess

        def do_cube(x):
            return x ** 3

        slaves = []
        for round in (1, 2):   # the same cell run twice
            master = initializeMasterProcess("handlers", handlers={"cube": do_cube} if round == 1 else [do_cube])
            slaves.append(subprocess.Popen([sys.executable, "-m", "scientific_ms", "slave", "handlers"]))
            master.requestTask("cube", round + 1)
            print("round", round, master.retrieveResult("cube")[2])
        master.shutdown()
        print("slaves exit", [slave.wait(60) for slave in slaves])
        """)
    assert "round 1 8" in out and "round 2 27" in out, out
    assert "slaves exit [0, 0]" in out, out
    assert "ending this process's earlier master of that label" in out, out


def test_code_the_slaves_cannot_load_is_not_restarted_in_a_loop(processes, tmp_path):
    """A handler from a module the slaves cannot import: each slave says why and refuses,
    and the master starts no replacement, which would fail the same way."""
    (tmp_path / "vanishing.py").write_text("def square(x):\n    return x * x\n")
    out = run_c(processes, f"""\
        import logging, os, sys, threading
        sys.path.insert(0, {str(tmp_path)!r})
        import vanishing
        os.remove(vanishing.__file__)   # the slaves, importing it by name, find nothing
        sys.path.remove({str(tmp_path)!r})
        from scientific_ms import initializeMasterProcess

        refusals, refused = [], threading.Event()
        class Catch(logging.Handler):
            def emit(self, record):
                if "refused to serve" in record.getMessage():
                    refusals.append(record)
                    refused.set()
        logging.getLogger("scientific_ms").addHandler(Catch())
        master = initializeMasterProcess("cannot-load", handlers=[vanishing.square])
        master.launchSlaveJobs(1)
        refused.wait(60)
        master.shutdown()
        print("refusals", len(refusals))
        """)
    assert "refusals 1" in out, out
    assert out.count("cannot be loaded here (ModuleNotFoundError") == 1, out
    assert "must be importable in the slave too" in out, out


def test_unpicklable_slave_class_is_refused_and_leaves_no_master(processes):
    out = run_c(processes, """\
        import threading
        from scientific_ms import MasterProcess, SlaveProcess, runJob
        from scientific_ms.errors import SerializationError
        from scientific_ms.wire import discovery

        class Job(MasterProcess):
            def run(self):
                return None

        class Worker(SlaveProcess):
            lock = threading.Lock()

        try:
            runJob("unpicklable", Job, Worker, launch_slaves=1)
        except SerializationError as error:
            print("refused:", error)
        print("label file left:", discovery.read_label_file("unpicklable") is not None)
        """)
    assert "refused: the slave class Worker cannot be pickled" in out, out
    assert "label file left: False" in out, out


def test_large_values_carried_by_value_get_a_warning(caplog):
    table = bytes(20 * 1024 * 1024)

    class Heavy(SlaveProcess):   # defined in a function: cloudpickle sends it by value, with table
        def do_look(self, index):
            return table[index]

    with caplog.at_level(logging.WARNING, logger="scientific_ms.interactive"):
        code = slave_class_code(Heavy, 120.0)
    assert len(code) > len(table), "the table travels inside the stored code"
    assert re.search(r"the slave class .*Heavy: \d+ MB pickled", caplog.text), caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="scientific_ms.interactive"):
        handlers_code({"square": abs})
    assert caplog.text == ""


def test_a_master_of_this_process_names_the_fix():
    first = MasterProcess("held-here", use_name_server=False, port=0)
    try:
        with pytest.raises(LabelInUseError, match=r"this very process .* shutdown\(\)"):
            MasterProcess("held-here", use_name_server=False, port=0)
    finally:
        first.shutdown()


def test_handler_table():
    def do_square(x):
        return x * x

    def cube(x):
        return x ** 3

    assert handler_table([do_square, cube]) == {"square": do_square, "cube": cube}
    assert handler_table({"power": cube}) == {"power": cube}
    for bad, why in [({"not a tag": cube}, "not an identifier"), ({"x": 3}, "not a function"),
                     ([], "no handler"), ([lambda x: x], "no name"), (cube, "a list of functions")]:
        with pytest.raises(ConfigurationError, match=why):
            handler_table(bad)


def test_notebook_bar_draws_with_tqdm():
    tqdm = pytest.importorskip("tqdm").tqdm
    stream = io.StringIO()
    bar = NotebookBar(tqdm(total=0, desc="job", file=stream, mininterval=0))
    bar.update(1, 3)
    bar.update_counters({"delivered": 3, "requested": 3})
    bar.close()
    bar.update(4, 4)   # after close: ignored
    assert re.search(r"job: 100%.*3/3", stream.getvalue()), stream.getvalue()
    assert not in_ipython_kernel()


def test_a_plain_interpreter_is_no_kernel():
    out = subprocess.run([sys.executable, "-c", "from scientific_ms.progress_notebook import in_ipython_kernel;"
                          "import IPython; print(in_ipython_kernel())"], capture_output=True, text=True,
                         timeout=60)
    if "No module named 'IPython'" in out.stderr:
        pytest.skip("IPython is not installed")
    assert out.stdout.strip() == "False", out.stderr
