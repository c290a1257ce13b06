"""Where scientists' code already runs: ``multiprocessing.Pool`` and joblib, on the farm.

Nothing here is imported with the package: ``scientific_ms.Pool`` and
``scientific_ms.register_joblib`` import it on first use.
"""

from __future__ import annotations


def register_joblib(make_default: bool = False) -> None:
    """Register the joblib backend ``"scientific_ms"`` (see ``joblib_backend``).

    Then ``with joblib.parallel_config(backend="scientific_ms", n_jobs=N):``
    runs joblib's batches (scikit-learn's ``n_jobs``) on N local slaves;
    ``executor=ex`` or ``label="..."`` as further arguments run them on an
    existing Executor or on the slaves of a label.
    """
    try:
        from .joblib_backend import register
    except ImportError as error:
        if error.name != "joblib":
            raise
        raise ImportError("register_joblib() needs joblib: pip install joblib "
                          "(or pip install 'scientific_ms[joblib]')") from error
    register(make_default)
