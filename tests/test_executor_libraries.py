"""Libraries that take a pool or a map give exactly their serial results on an Executor."""

import os
from pathlib import Path

import pytest

import executor_functions as fx
from scientific_ms import Executor

HERE = Path(__file__).resolve().parent


@pytest.fixture
def executor(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))
    with Executor(slaves=2, use_name_server=False) as ex:
        yield ex


def test_emcee_ensemble_sampler_with_the_executor_as_pool(executor):
    emcee = pytest.importorskip("emcee")
    np = pytest.importorskip("numpy")

    def chain(pool):
        np.random.seed(42)
        start = np.random.randn(16, 3)
        sampler = emcee.EnsembleSampler(16, 3, fx.log_prob, pool=pool)
        sampler.run_mcmc(start, 30, progress=False)
        return sampler.get_chain(), sampler.get_log_prob()

    serial_chain, serial_log_prob = chain(None)
    farm_chain, farm_log_prob = chain(executor)
    assert np.array_equal(serial_chain, farm_chain)
    assert np.array_equal(serial_log_prob, farm_log_prob)
    assert executor.master.task_manager.counters["delivered"] == 16 * 30 + 16   # every call ran on the farm


def test_differential_evolution_with_the_executor_map(executor):
    optimize = pytest.importorskip("scipy.optimize")
    np = pytest.importorskip("numpy")
    options = dict(bounds=[(-2, 2)] * 3, seed=7, maxiter=15, popsize=8, polish=False, updating="deferred")
    serial = optimize.differential_evolution(optimize.rosen, workers=1, **options)
    farm = optimize.differential_evolution(optimize.rosen, workers=executor.map, **options)
    assert np.array_equal(serial.x, farm.x) and serial.fun == farm.fun and serial.nfev == farm.nfev
    assert executor.master.task_manager.counters["delivered"] == farm.nfev
