#!/usr/bin/env python3
"""Micro-benchmark of Run.log(), the hot path of a training loop.

Starts the twin daemon (tests/twin.py) in another process on a unix socket, logs through a
real online run (the sender thread runs and ships batches meanwhile, as in training), and
prints the median cost of one log() call in ns, measured over rounds of calls. The goal is
<= 2000 ns.

    python3 sdk/python/bench_log.py [--rounds 300] [--calls 1000]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def measure(fn, rounds, calls):
    per_call = []
    clock = time.perf_counter_ns
    for _ in range(rounds):
        t0 = clock()
        fn(calls)
        per_call.append((clock() - t0) / calls)
    return statistics.median(per_call), min(per_call)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--calls", type=int, default=1000)
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="ty-bench-")
    sock = os.path.join(tmp, "api.sock")
    env = dict(os.environ, PYTHONPATH=HERE)
    twin = subprocess.Popen([sys.executable, "-m", "tests.twin", "--socket", sock,
                             "--run", "bench", "--token", "t"], cwd=HERE, env=env,
                            stdout=subprocess.PIPE)
    try:
        twin.stdout.readline()  # its URL, once it listens
        os.environ.update({"TRAINYARD_RUN_ID": "bench", "TRAINYARD_RUN_TOKEN": "t",
                           "TRAINYARD_TRACKING_URL": "unix://" + sock,
                           "TRAINYARD_EXPERIMENT": "bench"})
        from trainyard import Run
        run = Run.get_context()
        log = run.log

        def no_step(n):
            for i in range(n):
                log("loss", 0.5)

        def with_step(n):
            for i in range(n):
                log("acc", 0.5, step=i)

        def empty_loop(n):  # the loop's own cost, for reference
            for i in range(n):
                pass

        no_step(10000)
        run.flush(30)
        loop_ns, _ = measure(empty_loop, args.rounds, args.calls)
        med, best = measure(no_step, args.rounds, args.calls)
        med_s, best_s = measure(with_step, args.rounds, args.calls)
        t0 = time.perf_counter()
        ok = run.flush(60)
        flush_s = time.perf_counter() - t0
        sent = {m["name"]: m["count"] for m in
                run._backend.call("GET", "/metrics")["metrics"]}
        expected = 10000 + args.rounds * args.calls
        print("python %s, %d rounds x %d calls" % (sys.version.split()[0], args.rounds,
                                                   args.calls))
        print("log(name, value)        median %5.0f ns/call (best round %4.0f)" % (med, best))
        print("log(name, value, step)  median %5.0f ns/call (best round %4.0f)"
              % (med_s, best_s))
        print("empty loop              median %5.0f ns/iteration" % loop_ns)
        print("final flush %.2f s; daemon has %d + %d points (expected %d + %d)%s"
              % (flush_s, sent.get("loss", 0), sent.get("acc", 0), expected,
                 args.rounds * args.calls, "" if ok else " FLUSH TIMED OUT"))
        print("median ns per call: %.0f" % med)
        return 0 if ok and sent.get("loss") == expected else 1
    finally:
        twin.terminate()
        twin.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
