"""Scripts in child processes: flush at exit and on SIGTERM, fork, many writers, offline."""

import glob
import json
import os
import signal
import time
import unittest

from tests.support import TwinTestCase, wait_until


class ExitTest(TwinTestCase):
    def test_points_are_flushed_at_exit(self):
        code, out, err = self.run_child("""
            from trainyard import Run
            run = Run.get_context()
            for i in range(30000):
                run.log("loss", i * 0.5)
            run.log_row("row", a=1)
            print(run.id, run.experiment)
        """)
        self.assertEqual(code, 0, err)
        self.assertEqual(out.split(), ["run-1", "exp-1"])
        self.assertEqual([v for _, _, v in self.twin.points("run-1", "loss")],
                         [i * 0.5 for i in range(30000)])
        self.assertEqual(len(self.twin.run().entries), 1)
        self.assertEqual(err, "")

    def test_exit_with_the_daemon_down_is_bounded_and_says_what_was_lost(self):
        self.twin.down()
        t0 = time.monotonic()
        code, out, err = self.run_child("""
            from trainyard import Run
            run = Run.get_context()
            for i in range(100):
                run.log("loss", float(i))
        """, TRAINYARD_EXIT_FLUSH_SECONDS="1")
        self.assertEqual(code, 0, err)
        self.assertLess(time.monotonic() - t0, 15)
        self.assertIn("100 points of run run-1 could not be sent", err)

    def test_sigterm_sent_by_the_script_itself(self):
        code, out, err = self.run_child("""
            import os, signal, time
            from trainyard import Run
            run = Run.get_context()
            for i in range(20000):
                run.log("s", float(i), step=i)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
            print("still alive")
        """)
        self.assertEqual(code, -signal.SIGTERM, err)
        self.assertNotIn("still alive", out)
        self.assertEqual([s for s, _, _ in self.twin.points("run-1", "s")], list(range(20000)))

    def test_sigterm_from_outside(self):
        p = self.start_child("""
            import sys, time
            from trainyard import Run
            run = Run.get_context()
            for i in range(20000):
                run.log("s", float(i))
            print("ready", flush=True)
            time.sleep(60)
        """, TRAINYARD_FLUSH_INTERVAL_SECONDS="30")  # nothing sent before the signal
        self.assertEqual(p.stdout.readline().strip(), b"ready")
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, -signal.SIGTERM, err)
        self.assertEqual(len(self.twin.points("run-1", "s")), 20000)

    def test_sigterm_chains_the_previous_handler(self):
        code, out, err = self.run_child("""
            import os, signal, sys
            def mine(signum, frame):
                print("previous handler ran", flush=True)
                sys.exit(7)
            signal.signal(signal.SIGTERM, mine)
            from trainyard import Run
            run = Run.get_context()
            for i in range(1000):
                run.log("s", float(i))
            os.kill(os.getpid(), signal.SIGTERM)
        """, TRAINYARD_FLUSH_INTERVAL_SECONDS="30")
        self.assertEqual(code, 7, err)
        self.assertIn("previous handler ran", out)
        self.assertEqual(len(self.twin.points("run-1", "s")), 1000)


class ForkAndWritersTest(TwinTestCase):
    def test_many_writer_processes_into_one_run(self):
        procs, per = 8, 20000
        children = [self.start_child("""
            import os
            from trainyard import Run
            run = Run.get_context()
            rank = int(os.environ["RANK"])
            for i in range(%d):
                run.log("x", float(rank), step=rank * %d + i)
                run.log("auto", float(rank))
        """ % (per, per), RANK=str(rank)) for rank in range(procs)]
        for c in children:
            out, err = c.communicate(timeout=300)
            self.assertEqual(c.returncode, 0, err)
        x = self.twin.points("run-1", "x")
        self.assertEqual(sorted(s for s, _, _ in x), list(range(procs * per)))
        self.assertTrue(all(v == s // per for s, _, v in x))
        auto = self.twin.points("run-1", "auto")
        self.assertEqual(len(auto), procs * per)
        self.assertEqual(len({s for s, _, _ in auto}), procs * per)  # steps unique

    def test_forked_child_gets_a_fresh_buffer(self):
        code, out, err = self.run_child("""
            import os, sys
            from trainyard import Run
            run = Run.get_context()
            for i in range(1000):
                run.log("parent", float(i))
            pid = os.fork()
            if pid == 0:
                for i in range(500):
                    run.log("child", float(i))
                sys.exit(0)          # atexit flushes the child's own points only
            _, status = os.waitpid(pid, 0)
            print(status)
        """, TRAINYARD_FLUSH_INTERVAL_SECONDS="30")
        self.assertEqual(code, 0, err)
        self.assertEqual(out.strip(), "0")
        self.assertEqual(len(self.twin.points("run-1", "parent")), 1000)
        self.assertEqual(len(self.twin.points("run-1", "child")), 500)

    def test_multiprocessing_fork_workers_flush_at_exit(self):
        code, out, err = self.run_child("""
            import multiprocessing as mp
            from trainyard import Run
            run = Run.get_context()
            run.log("main", 1.0)

            def work(rank):
                r = Run.get_context()
                for i in range(5000):
                    r.log("w", float(rank), step=rank * 5000 + i)

            ctx = mp.get_context("fork")
            ps = [ctx.Process(target=work, args=(k,)) for k in range(4)]
            for p in ps: p.start()
            for p in ps: p.join()
            print([p.exitcode for p in ps])
        """, TRAINYARD_FLUSH_INTERVAL_SECONDS="30")
        self.assertEqual(code, 0, err)
        self.assertEqual(out.strip(), "[0, 0, 0, 0]")
        self.assertEqual(sorted(s for s, _, _ in self.twin.points("run-1", "w")),
                         list(range(20000)))
        self.assertEqual(len(self.twin.points("run-1", "main")), 1)


    def test_multiprocessing_workers_with_their_own_context(self):
        # The parent never logs: each worker creates the run object itself.
        code, out, err = self.run_child("""
            import multiprocessing as mp
            from trainyard import Run

            def work(rank):
                r = Run.get_context()
                for i in range(3000):
                    r.log("w", float(rank), step=rank * 3000 + i)

            if __name__ == "__main__":
                for method in ("fork", "spawn"):
                    ctx = mp.get_context(method)
                    ps = [ctx.Process(target=work, args=(k,)) for k in range(2)]
                    for p in ps: p.start()
                    for p in ps: p.join()
                    print(method, [p.exitcode for p in ps])
        """, TRAINYARD_FLUSH_INTERVAL_SECONDS="30")
        self.assertEqual(code, 0, err)
        self.assertEqual(out.split("\n")[:2], ["fork [0, 0]", "spawn [0, 0]"])
        steps = sorted(s for s, _, _ in self.twin.points("run-1", "w"))
        self.assertEqual(steps, sorted(list(range(6000)) * 2))


class OfflineTest(TwinTestCase):
    def test_offline_run_writes_a_folder(self):
        png = os.path.join(self.tmp, "p.png")
        with open(png, "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\nxx")
        code, out, err = self.run_child("""
            import json, math
            from trainyard import Run
            run = Run.get_context()
            assert run is Run.get_context()
            for i in range(10):
                run.log("loss", 1.0 / (i + 1))
            run.log("acc", float("nan"), step=7)
            run.log_list("l", [1, 2])
            run.log_row("r", a=1)
            run.log_image("img", path=%r)
            run.tag("t", "v")
            run.add_properties({"p": "1"})
            try:
                run.add_properties({"p": "2"})
            except ValueError:
                print("conflict")
            run.upload_file("outputs/a.txt", %r)
            m = run.get_metrics()
            print(json.dumps({"id": run.id, "offline": run.offline, "loss": m["loss"],
                              "acc_nan": math.isnan(m["acc"]), "l": m["l"], "r": m["r"]}))
            run.log("late", 5.0)          # written at exit
        """ % (png, png), TRAINYARD_RUN_ID="", TRAINYARD_TRACKING_URL="")
        self.assertEqual(code, 0, err)
        lines = out.splitlines()
        self.assertEqual(lines[0], "conflict")
        info = json.loads(lines[1])
        self.assertTrue(info["offline"])
        self.assertEqual(info["loss"], [1.0 / (i + 1) for i in range(10)])
        self.assertTrue(info["acc_nan"])
        self.assertEqual(info["l"], [1.0, 2.0])
        self.assertEqual(info["r"], {"a": [1.0]})
        notice = [l for l in err.splitlines() if l]
        self.assertEqual(len(notice), 1, err)
        self.assertIn("logging offline to", notice[0])
        folders = glob.glob(os.path.join(self.tmp, "trainyard-offline", "*"))
        self.assertEqual(len(folders), 1)
        folder = folders[0]
        self.assertEqual(os.path.basename(folder), info["id"])
        self.assertIn(folder, notice[0])
        with open(os.path.join(folder, "metrics.jsonl")) as f:
            points = [json.loads(l) for l in f]
        self.assertEqual([p["step"] for p in points if p["name"] == "loss"], list(range(10)))
        self.assertEqual([p for p in points if p["name"] == "acc"][0]["value"], "NaN")
        self.assertEqual([p["value"] for p in points if p["name"] == "late"], [5.0])
        with open(os.path.join(folder, "entries.jsonl")) as f:
            self.assertEqual([json.loads(l)["kind"] for l in f], ["list", "row", "image"])
        with open(os.path.join(folder, "tags.json")) as f:
            self.assertEqual(json.load(f), {"t": "v"})
        with open(os.path.join(folder, "properties.json")) as f:
            self.assertEqual(json.load(f), {"p": "1"})
        self.assertTrue(os.path.isfile(os.path.join(folder, "files", "images", "img", "0.png")))
        self.assertTrue(os.path.isfile(os.path.join(folder, "files", "outputs", "a.txt")))
        self.assertEqual(self.twin.requests, [])


if __name__ == "__main__":
    unittest.main()
