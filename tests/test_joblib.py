"""The joblib backend "scientific_ms": joblib's batches and scikit-learn's n_jobs on real slaves."""

import gc
import os
from pathlib import Path

import pytest

import executor_functions as fx
import pool_functions as pf
from conftest import descendants_gone, wait_for
from scientific_ms import ConfigurationError, Executor, RemoteTraceback, register_joblib

joblib = pytest.importorskip("joblib")

pytestmark = pytest.mark.timeout(180)

HERE = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def slaves_import_test_functions(monkeypatch):
    """Spawned slaves inherit the environment: let them import the test functions."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))
    register_joblib()


def test_grid_search_on_the_farm_scores_exactly_as_the_serial_run():
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_iris
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVC

    X, y = load_iris(return_X_y=True)
    grid = {"C": [0.1, 1.0, 10.0], "gamma": ["scale", 0.1, 1.0]}
    serial = GridSearchCV(SVC(), grid, cv=5).fit(X, y)
    with joblib.parallel_config(backend="scientific_ms", n_jobs=2, use_name_server=False):
        farm = GridSearchCV(SVC(), grid, cv=5, n_jobs=2).fit(X, y)
    assert farm.best_params_ == serial.best_params_
    assert farm.best_score_ == serial.best_score_
    for key in [f"split{i}_test_score" for i in range(5)] + ["mean_test_score", "rank_test_score"]:
        assert list(farm.cv_results_[key]) == list(serial.cv_results_[key]), key


def test_parallel_calls_errors_and_the_slaves_end_with_the_block():
    with joblib.parallel_config(backend="scientific_ms", n_jobs=2, use_name_server=False):
        assert joblib.Parallel()(joblib.delayed(pf.f)(i) for i in range(50)) == [i * i for i in range(50)]
        backend = joblib.parallel.get_active_backend()[0]
        assert joblib.Parallel()(joblib.delayed(fx.add)(i, y=1) for i in range(5)) == [1, 2, 3, 4, 5]
        with pytest.raises(ValueError, match="boom") as caught:
            joblib.Parallel()(joblib.delayed(fx.fail)("boom") for _ in range(3))
        assert isinstance(caught.value.__cause__, RemoteTraceback)
        master = backend._executor.master   # one Executor served the three Parallel calls
        pids = list(master.spawned_slaves)
        assert len(pids) == 2
    del backend, caught
    # Once collected: the failed call's batches still running held joblib's Parallel (a cycle) when it raised.
    wait_for(lambda: gc.collect() >= 0 and master.task_manager.terminated, 60,
             "the backend's master to end with the block")
    assert not descendants_gone(pids, 60), "the slaves outlived the backend"


def test_a_given_executor_serves_and_stays():
    with Executor(slaves=1, use_name_server=False) as ex:
        with joblib.parallel_config(backend="scientific_ms", executor=ex):
            assert joblib.effective_n_jobs() >= 2
            assert joblib.Parallel()(joblib.delayed(pf.f)(i) for i in range(10)) == [i * i for i in range(10)]
        assert ex.master.task_manager.counters["requested"] >= 1
        assert ex.submit(pf.f, 3).result(timeout=60) == 9   # still running
        with pytest.raises(ConfigurationError, match="executor"):
            with joblib.parallel_config(backend="scientific_ms", executor=ex, label="x"):
                pass


def test_the_slaves_of_a_label_serve(processes):
    label = f"joblib-{os.getpid()}"
    slave = processes.task_manager("slave", label, name="slave")   # waits for the master
    with joblib.parallel_config(backend="scientific_ms", label=label, use_name_server=False):
        assert joblib.Parallel()(joblib.delayed(pf.f)(i) for i in range(10)) == [i * i for i in range(10)]
    code, output = processes.finish(slave, 60)
    assert code == 0, output
