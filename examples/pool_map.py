"""multiprocessing.Pool code, and joblib, on the farm: the same calls, fault-tolerant slaves.

    python pool_map.py

runs the examples of the multiprocessing documentation on a Pool of two
slaves on this machine, then (if joblib is installed) a joblib loop on the
same slaves. More slaves can join while it runs with
``task_manager slave LABEL`` (the label is printed).
"""

from scientific_ms import Pool, RemoteTraceback, register_joblib


def f(x):
    return x * x


def main():
    with Pool(processes=2) as pool:
        print(f"label: {pool.label}")
        print(pool.map(f, range(10)))                       # [0, 1, 4, ..., 81]
        print(sorted(pool.imap_unordered(f, range(10))))    # the same, in the order they came
        print(pool.starmap(pow, [(2, 5), (3, 2)]))          # [32, 9]
        result = pool.apply_async(f, (20,))
        print(result.get(timeout=60))                       # 400

        errors = []
        failed = pool.apply_async(int, ("x",), error_callback=errors.append)
        failed.wait(60)
        remote = isinstance(errors[0].__cause__, RemoteTraceback)
        print(f"int('x') raised {errors[0]!r} on a slave{' (remote traceback attached)' if remote else ''}")

        try:
            import joblib
        except ImportError:
            print("joblib is not installed: the joblib part is skipped")
            return
        register_joblib()
        with joblib.parallel_config(backend="scientific_ms", executor=pool.executor):
            squares = joblib.Parallel()(joblib.delayed(f)(x) for x in range(10))
        print("joblib:", squares)


if __name__ == "__main__":
    main()
