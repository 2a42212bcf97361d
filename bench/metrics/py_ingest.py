#!/usr/bin/env python3
"""End-to-end metric ingest from the Python client, as a training script does it.

Run by bench/metrics/e2e_tool.cc as a child process with the environment a run's container
gets (TRAINYARD_TRACKING_URL=unix://..., TRAINYARD_RUN_TOKEN, TRAINYARD_RUN_ID,
TRAINYARD_EXPERIMENT, PYTHONPATH=<source>/sdk/python). Logs N points of one series with
run.log() in a loop, then run.flush(), and prints one "key value" line per figure:

    py_elapsed_s   seconds from the first log() to flush() returning (every point durable:
                   the daemon answers a metrics body once it is stored)
    py_loop_s      seconds spent in the log() loop alone (the training thread's cost)
    py_flush_s     seconds flush() waited after the loop

The caller checks through the API that all N points are stored.

    python3 bench/metrics/py_ingest.py N [--profile FILE]

--profile writes cProfile statistics of the main thread and of the sender thread (to FILE and
FILE.sender) and prints the top entries of each on stderr; the figures are then slower.
"""

import argparse
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("points", type=int)
    ap.add_argument("--profile", default="")
    args = ap.parse_args()
    n = args.points

    from trainyard import Run
    from trainyard import _pipeline

    profilers = []
    if args.profile:
        import cProfile
        loop = _pipeline.Pipeline._loop

        def profiled_loop(self):  # the sender thread, profiled (bench-side wrapper only)
            prof = cProfile.Profile()
            profilers.append(prof)
            prof.enable()
            try:
                loop(self)
            finally:
                prof.disable()

        _pipeline.Pipeline._loop = profiled_loop
        main_prof = cProfile.Profile()

    run = Run.get_context(allow_offline=False)
    log = run.log
    clock = time.perf_counter
    if args.profile:
        main_prof.enable()
    t0 = clock()
    for i in range(n):
        log("loss", 1.0 / (i + 1), step=i)
    t1 = clock()
    ok = run.flush()
    t2 = clock()
    if args.profile:
        main_prof.disable()
    if not ok:
        sys.stderr.write("py_ingest: flush timed out\n")
        return 1
    p = run._pipe
    if p.dropped_full or p.dropped_rejected:
        sys.stderr.write("py_ingest: %d points dropped (buffer full), %d refused\n"
                         % (p.dropped_full, p.dropped_rejected))
        return 1
    print("py_points %d" % n)
    print("py_elapsed_s %.6f" % (t2 - t0))
    print("py_loop_s %.6f" % (t1 - t0))
    print("py_flush_s %.6f" % (t2 - t1))
    sys.stdout.flush()
    if args.profile:
        import pstats
        run._pipe.stop()  # ends the sender thread, so its profile is complete
        main_prof.dump_stats(args.profile)
        pstats.Stats(main_prof, stream=sys.stderr).sort_stats("tottime").print_stats(12)
        for prof in profilers:
            prof.dump_stats(args.profile + ".sender")
            pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
