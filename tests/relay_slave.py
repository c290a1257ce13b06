import sys
from scientific_ms import SlaveProcess
class S(SlaveProcess):
    def do_square(self, x):
        return x * x
if __name__ == "__main__":
    from scientific_ms.slave.keeper import run_keeper
    from scientific_ms.wire.client import MasterConnection
    import os
    c = MasterConnection("127.0.0.1", int(sys.argv[1]), os.environb[b"SCIENTIFIC_MS_SECRET"], "relaycheck")
    link = run_keeper("relaycheck", c, int(sys.argv[2]), 0)
    if isinstance(link, int):
        sys.exit(link)
    from scientific_ms.slave import worker_link
    worker_link.become_worker(link)
    S("relaycheck", master_host=f"127.0.0.1:{sys.argv[1]}").start()
