"""A mixed GPU/CPU sweep: training runs that need a GPU each, evaluations that need
none, and a final merge that needs every core of its host.

    python resources_sweep.py

One node agent on this machine (``task_manager slave LABEL -n 4 --resources
gpu=2``) offers 2 GPUs and 4 cores to its 4 slaves: two ``train`` tasks run
at once, each told its own GPU in ``CUDA_VISIBLE_DEVICES``; the other
slaves run ``evaluate`` tasks meanwhile; ``merge`` runs alone. Without a GPU
here, the ids are only names: declare what your nodes have. See
docs/guide/resources.md.
"""

import os
import time

from scientific_ms import LocalSlaves, MasterProcess, SlaveProcess, runJob


class Sweep(MasterProcess):
    def run(self):
        self.set_resources("train", {"gpu": 1, "memory": "1G"})   # every train task, unless it says
        for rate in (0.1, 0.01, 0.001, 0.0001):
            self.requestTask("train", rate)
        for fold in range(6):
            self.requestTask("evaluate", fold)                  # no resources: any free slave
        for _ in range(10):
            task_id, tag, result = self.retrieveResult()
            print(f"{tag}: {result}")
        self.request_task("merge", resources={"cores": 4})       # the whole host, alone
        print("merge:", self.retrieveResult()[2])


class Worker(SlaveProcess):
    def do_train(self, rate):
        gpus = os.environ["CUDA_VISIBLE_DEVICES"]   # e.g. torch.device("cuda") is that GPU
        time.sleep(0.3)                             # stands for training on it
        return f"rate {rate} trained on GPU {gpus}"

    def do_evaluate(self, fold):
        time.sleep(0.1)
        return f"fold {fold} scored, no GPU ({os.environ.get('CUDA_VISIBLE_DEVICES')})"

    def do_merge(self):
        return "merged on 4 cores"


runJob("resources_sweep", Sweep, Worker,
       launch_slaves=LocalSlaves(slaves_per_job=4, min_jobs=1, max_jobs=1, resources="gpu=2"))
