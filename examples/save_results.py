"""Write each result to disk as it arrives, and skip at start what a previous run finished.

    python save_results.py

Without a journal, a master that is killed loses every result it had not
handed to run(). This pattern keeps them: results.jsonl gets one line per
result as soon as it is retrieved, and a second run requests only the
tasks whose results are not in it.
"""

import json
import os

from scientific_ms import MasterProcess, SlaveProcess, runJob


class Master(MasterProcess):

    def run(self):
        done = set()
        if os.path.exists("results.jsonl"):
            with open("results.jsonl") as previous:
                done = {json.loads(line)["n"] for line in previous}
        ids = [self.requestTask("cube", n) for n in range(10) if n not in done]
        print(f"{len(done)} results on disk, {len(ids)} tasks requested")
        with open("results.jsonl", "a") as out:
            for _ in ids:
                task_id, tag, (n, value) = self.retrieveResult()
                out.write(json.dumps({"n": n, "value": value}) + "\n")
                out.flush()


class Worker(SlaveProcess):

    def do_cube(self, n):
        return n, n ** 3


runJob("save_results", Master, Worker, launch_slaves=2)
