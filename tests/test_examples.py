"""The examples run, and the README and the user guide show only code that runs.

Every ``examples/*.py`` is run as a real process (two-script examples as a
master and a slave process together) and its output checked. Every
```python block of README.md and docs/guide/*.md must be part of an
example file, or be a doctest (``>>>``) that passes here, or be marked as a
fragment by an ``<!-- fragment -->`` line just before it. Every relative
link of the README and of docs/ must name a file, and a heading, that exist.
"""

import doctest
import json
import re
import shutil
import sys
import textwrap

import pytest

from conftest import EXAMPLES, ROOT
from test_mpi import HAVE_MPI4PY, MPIEXEC

pytestmark = pytest.mark.timeout(180)

TIMEOUT = 90.0      # seconds one example may take (a few on an idle machine)

# ------------------------------------------------------------------ running the examples


@pytest.fixture
def workdir(tmp_path):
    """A copy of examples/, so that the files the examples write stay out of the repository."""
    target = tmp_path / "examples"
    shutil.copytree(EXAMPLES, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def run(processes, workdir, script, *args, timeout=TIMEOUT):
    """Run ``python script args`` in ``workdir``; its output, after checking it exited 0."""
    name = f"{script}-{len(processes.started)}"      # one output file per run
    code, out = processes.finish(processes.python(script, *args, cwd=workdir, name=name), timeout)
    assert code == 0, f"{script} exited {code}:\n{out}"
    return out


def test_master_slave_demo(processes, workdir):
    out = run(processes, workdir, "master_slave_demo.py")
    assert re.search(r"^Task sqrt_\d+ raised ValueError\('math domain error'\)$", out, re.M), out
    assert "math.sqrt(x)" in out                     # the remote traceback is printed
    for line in ("(0.0, 0.0)", "(1.0, 1.0)", "(2.0, 1.4142135623730951)", "(3.0, 1.7320508075688772)"):
        assert re.search(rf"^sqrt_\d+ {re.escape(line)}$", out, re.M), out


def test_two_scripts_master_and_slave(processes, workdir):
    master = processes.python("master.py", cwd=workdir, name="master")
    slave = processes.python("slave.py", cwd=workdir, name="slave")   # waits for the master if first
    code, out = processes.finish(master, TIMEOUT)
    assert code == 0, out
    assert re.search(r"^Task sqrt_\d+ raised ValueError\('math domain error'\)$", out, re.M), out
    assert re.search(r"^sqrt_\d+ \(3\.0, 1\.7320508075688772\)$", out, re.M), out
    code, slave_out = processes.finish(slave, TIMEOUT)
    assert code == 0, slave_out


def test_two_scripts_with_spawned_slaves(processes, workdir):
    out = run(processes, workdir, "master.py", 2)
    assert len(re.findall(r"^sqrt_\d+ \(", out, re.M)) == 4, out


def test_global_state(processes, workdir):
    out = run(processes, workdir, "global_state.py")
    match = re.search(r"^total (\S+), expected (\S+)$", out, re.M)
    assert match, out
    assert float(match[1]) == pytest.approx(float(match[2]), rel=1e-9)


def test_executor_demo(processes, workdir):
    out = run(processes, workdir, "executor_demo.py")
    match = re.search(r"^pi ~ (\S+) from 20 futures$", out, re.M)
    assert match and abs(float(match[1]) - 3.14) < 0.1, out
    assert "map: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]" in out
    assert "sqrt(-1.0) raised ValueError('math domain error') on a slave (remote traceback attached)" in out


def test_warm_start_example(processes, workdir):
    out = run(processes, workdir, "warm_start.py")
    assert re.search(r"^100 norms from [12] forked slaves, the last 573\.018$", out, re.M), out


def test_pool_map(processes, workdir):
    out = run(processes, workdir, "pool_map.py")
    squares = "[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]"
    assert out.count(f"{squares}\n") >= 2 and "[32, 9]\n400\n" in out, out
    assert "int('x') raised ValueError(\"invalid literal for int() with base 10: 'x'\") on a slave " \
           "(remote traceback attached)" in out, out
    assert f"joblib: {squares}" in out or "joblib is not installed" in out, out


def test_faults_demo(processes, workdir):
    out = run(processes, workdir, "faults_demo.py")
    for square in (0, 1, 4, 9):
        assert f"work: {square}\n" in out, out
    assert re.search(r"^crash: task crash_\d+ lost its slave 2 times", out, re.M), out
    assert "nap: stopped by its time limit" in out, out


def test_steering_demo(processes, workdir):
    out = run(processes, workdir, "steering_demo.py")
    for n in (0, 1, 2, 3, 4, 5, 100):
        assert f"load: {n}\n" in out, out
    assert "flaky: done on attempt 2\n" in out, out
    assert "flaky gave up: attempt 2: the disk was busy\n" in out, out
    assert re.search(r"^scientific_ms: task flaky_\d+ failed on attempt 2 of 2: every attempt failed "
                     r"\(retries=1\); earlier attempts failed on process \d+", out, re.M), out


def test_resources_sweep(processes, workdir):
    out = run(processes, workdir, "resources_sweep.py")
    trained = re.findall(r"^train: rate \S+ trained on GPU (\d)$", out, re.M)
    assert len(trained) == 4 and set(trained) <= {"0", "1"}, out
    assert out.count("scored, no GPU (None)") == 6 and "merge: merged on 4 cores" in out, out


def test_journal_demo_resumes_from_its_journal(processes, workdir):
    first = run(processes, workdir, "journal_demo.py")
    assert "sum of squares 2470; computed in this run: 20 of 20" in first, first
    second = run(processes, workdir, "journal_demo.py")
    assert "sum of squares 2470; computed in this run: 0 of 20" in second, second
    assert len(re.findall(r"^square_\d+ \(\d+,\) \d+$", second, re.M)) == 20, second


def test_save_results_skips_what_is_on_disk(processes, workdir):
    assert "0 results on disk, 10 tasks requested" in run(processes, workdir, "save_results.py")
    assert "10 results on disk, 0 tasks requested" in run(processes, workdir, "save_results.py")
    lines = (workdir / "results.jsonl").read_text().splitlines()
    assert sorted((row["n"], row["value"]) for row in map(json.loads, lines)) == [(n, n ** 3) for n in range(10)]


def test_sample_job(processes, workdir):
    out = run(processes, workdir, "sample_master.py")
    assert re.fullmatch(r"failed: sqrt_\d+ ValueError\('math domain error'\)\n", out), out


def test_mpi_demo_without_mpi(processes, workdir):
    out = run(processes, workdir, "mpi_demo.py", 6)
    assert "sqrt(4) = 2.000000" in out and "sqrt(5) = 2.236068" in out, out
    assert sum(int(n) for n in re.findall(r"^\s*(\d+) tasks done by PID", out, re.M)) == 6, out


@pytest.mark.skipif(MPIEXEC is None or not HAVE_MPI4PY,
                    reason=f"needs mpiexec and mpi4py (mpiexec: {MPIEXEC or 'not found'}; "
                           f"mpi4py: {'yes' if HAVE_MPI4PY else 'not installed'})")
def test_mpi_demo_under_mpiexec(processes, workdir):
    job = processes.start([MPIEXEC, "-n", "3", sys.executable, "mpi_demo.py", "6"], cwd=workdir, name="mpiexec")
    code, out = processes.finish(job, TIMEOUT)
    assert code == 0, out
    assert "sqrt(4) = 2.000000" in out, out
    assert sum(int(n) for n in re.findall(r"^\s*(\d+) tasks done by PID", out, re.M)) == 6, out


@pytest.mark.skipif(MPIEXEC is None or not HAVE_MPI4PY,
                    reason=f"needs mpiexec and mpi4py (mpiexec: {MPIEXEC or 'not found'}; "
                           f"mpi4py: {'yes' if HAVE_MPI4PY else 'not installed'})")
def test_mpi_tasks(processes, workdir):
    out = run(processes, workdir, "mpi_tasks.py")
    found = re.findall(r"^n=(\d+): pi ~ (\S+) from 4 MPI processes$", out, re.M)
    assert [n for n, _ in found] == ["10", "100", "1000", "10000"], out
    assert abs(float(found[-1][1]) - 3.14159265) < 1e-7, out


def test_slurm_sweep_runs_with_local_slaves_without_slurm(processes, workdir):
    """Without a SLURM that answers, the example holds LocalSlaves (tests/test_slurm_provision.py
    runs it on a real SLURM)."""
    out = run(processes, workdir, "slurm_sweep.py")
    assert "integral ~ 0.5000 from 60 points" in out, out
    assert re.search(r"^slave jobs held: [123] \((local|slurm)\)$", out, re.M), out


def test_slave_output_demo(processes, workdir):
    out = run(processes, workdir, "slave_output_demo.py")
    assert re.findall(r"^\[slave \d+@[^\]]+\] (.*)$", out, re.M) == [
        "squaring 0", "squaring 1", "x = 1 is positive"], out


#: The example files each test above runs; slave.py and sample_slave.py run as slaves.
RUN_BY_TESTS = {"master_slave_demo.py", "master.py", "slave.py", "global_state.py", "executor_demo.py",
                "faults_demo.py", "journal_demo.py", "save_results.py", "sample_master.py",
                "sample_slave.py", "mpi_demo.py", "pool_map.py", "slurm_sweep.py", "warm_start.py",
                "slave_output_demo.py", "steering_demo.py", "resources_sweep.py", "mpi_tasks.py"}


def test_every_example_is_run_by_a_test():
    found = {path.name for path in EXAMPLES.glob("*.py")}
    assert found == RUN_BY_TESTS, (f"examples without a test here: {sorted(found - RUN_BY_TESTS)}; "
                                   f"tests of missing examples: {sorted(RUN_BY_TESTS - found)}")


# ------------------------------------------------------------------ the code shown in the docs

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
FRAGMENT = "<!-- fragment -->"


def guide_pages():
    return [ROOT / "README.md", *sorted((ROOT / "docs" / "guide").glob("*.md"))]


def python_blocks(text):
    """(line number, code, marked as a fragment) of each ```python block of a Markdown text."""
    for match in FENCE.finditer(text):
        if match[1] != "python":
            continue
        before = text[:match.start()].rstrip().rsplit("\n", 1)[-1].strip()
        yield text.count("\n", 0, match.start()) + 1, textwrap.dedent(match[2]), before == FRAGMENT


def example_sources():
    """The text of every example: each examples/*.py, and the code cells of each examples/*.ipynb
    (run by tests/test_notebook.py)."""
    sources = {path.name: path.read_text() for path in sorted(EXAMPLES.glob("*.py"))}
    for path in sorted(EXAMPLES.glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        sources[path.name] = "\n\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
    return sources


def problem(code, sources, name="<block>"):
    """Why ``code`` is not acceptable in the docs, or None."""
    if ">>>" in code:
        test = doctest.DocTestParser().get_doctest(code, {}, name, name, 0)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        output = []
        runner.run(test, out=output.append)
        return ("".join(output) or "a doctest failed") if runner.failures else None
    if not any(code.strip() in source for source in sources.values()):
        return "it is in no examples/*.py or *.ipynb file (copy it from one, or mark it <!-- fragment -->)"
    return None


@pytest.mark.parametrize("page", guide_pages(), ids=lambda path: str(path.relative_to(ROOT)))
def test_every_python_block_is_an_example_or_runs(page):
    sources = example_sources()
    problems = [f"{page.relative_to(ROOT)}:{line}: {why}"
                for line, code, fragment in python_blocks(page.read_text()) if not fragment
                for why in [problem(code, sources, f"{page.name}:{line}")] if why]
    assert not problems, "\n".join(problems)


def test_the_check_catches_a_block_that_is_not_an_example():
    """The check above can fail: an edited block, a wrong doctest, and only a marked fragment passes."""
    sources = {"demo.py": "import math\n\ndef f(x):\n    return math.sqrt(x)\n"}
    page = ("```python\ndef f(x):\n    return math.sqrt(x)\n```\n"
            "```python\ndef f(x):\n    return math.sqrt(x) + 1\n```\n"
            "```python\n>>> 1 + 1\n3\n```\n"
            f"{FRAGMENT}\n```python\nanything(...)\n```\n")
    verdicts = [(fragment, problem(code, sources)) for _, code, fragment in python_blocks(page)]
    assert verdicts[0] == (False, None)
    assert verdicts[1][1] and "no examples" in verdicts[1][1]
    assert verdicts[2][1] and "Expected" in verdicts[2][1]
    assert verdicts[3][0] is True


# ------------------------------------------------------------------ links

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(path):
    """GitHub's anchors for the headings of a Markdown file."""
    text = FENCE.sub("", path.read_text())
    slugs = set()
    for heading in re.findall(r"^#+\s+(.*)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        slugs.add(slug)
    return slugs


def test_relative_links_name_files_and_headings_that_exist():
    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for target in LINK.findall(FENCE.sub("", page.read_text())):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)
