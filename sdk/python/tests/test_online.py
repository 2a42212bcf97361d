"""The client against the twin daemon, in this process."""

import io
import math
import os
import struct
import sys
import threading
import time
import unittest

from tests.support import TwinTestCase, captured_stderr
from tests.twin import Twin
from trainyard import PropertyConflictError, Run, TrackingError, _wire

PNG = b"\x89PNG\r\n\x1a\n" + b"\0\0\0\rIHDR" + b"fake image body"


class FakeFigure(object):
    """Stands in for a matplotlib figure: savefig writes PNG bytes."""

    def __init__(self):
        self.formats = []

    def savefig(self, f, format=None):
        self.formats.append(format)
        f.write(PNG + b"-figure")


class ScalarsTest(TwinTestCase):
    def test_steps_absent_are_numbered_by_the_daemon_and_present_are_kept(self):
        run = self.make_run()
        t0 = int(time.time() * 1000)
        for v in (0.5, 0.25, 0.125):
            run.log("loss", v)
        run.log("acc", 0.9, step=10)
        run.log("acc", 0.95, step=20)
        run.log("flag", True)
        run.log("epoch", 3)
        self.assertTrue(run.flush(10))
        t1 = int(time.time() * 1000)
        loss = self.twin.points("run-1", "loss")
        self.assertEqual([(s, v) for s, _, v in loss], [(0, 0.5), (1, 0.25), (2, 0.125)])
        self.assertTrue(all(t0 <= t <= t1 for _, t, _ in loss), (t0, loss, t1))
        self.assertEqual([(s, v) for s, _, v in self.twin.points("run-1", "acc")],
                         [(10, 0.9), (20, 0.95)])
        self.assertEqual(self.twin.points("run-1", "flag")[0][2], 1.0)
        self.assertEqual(self.twin.points("run-1", "epoch")[0][2], 3.0)
        # On the wire: binary, one series per name, steps flag only where steps were given,
        # timestamps always.
        ctypes = {c for c, _ in self.twin.metric_bodies}
        self.assertEqual(ctypes, {_wire.CONTENT_TYPE})
        decoded = {}
        for _, body in self.twin.metric_bodies:
            for name, values, steps, ts in _wire.decode_metrics(body):
                self.assertNotIn(name, decoded)
                decoded[name] = (steps, ts)
        self.assertIsNone(decoded["loss"][0])
        self.assertEqual(decoded["acc"][0], [10, 20])
        self.assertTrue(all(ts is not None for _, ts in decoded.values()))
        # Later points without steps continue after the highest step.
        run.log("loss", 1.0)
        run.flush(10)
        self.assertEqual(self.twin.points("run-1", "loss")[-1][0], 3)

    def test_mixed_steps_within_one_batch_keep_order(self):
        run = self.make_run()
        run.log("m", 1.0)
        run.log("m", 2.0, step=5)
        run.log("m", 3.0)
        run.flush(10)
        self.assertEqual([(s, v) for s, _, v in self.twin.points("run-1", "m")],
                         [(0, 1.0), (5, 2.0), (6, 3.0)])

    def test_non_finite_values_arrive_exactly(self):
        run = self.make_run()
        values = [math.nan, math.inf, -math.inf, -0.0, 1e-310]
        for v in values:
            run.log("weird", v)
        run.flush(10)
        got = [v for _, _, v in self.twin.points("run-1", "weird")]
        self.assertEqual([struct.pack("<d", v) for v in got],
                         [struct.pack("<d", v) for v in values])
        m = run.get_metrics("weird")["weird"]
        self.assertTrue(math.isnan(m[0]))
        self.assertEqual(m[1:3], [math.inf, -math.inf])

    def test_bad_arguments_raise_at_the_call(self):
        run = self.make_run()
        with self.assertRaises(TypeError):
            run.log(5, 1.0)
        with self.assertRaises(ValueError):
            run.log("x" * 251, 1.0)
        with self.assertRaises(ValueError):
            run.log("é" * 200, 1.0)  # 200 characters, 400 bytes
        with self.assertRaises(ValueError):
            run.log("", 1.0)
        for bad in ("1.0", None, b"1", [1.0], {"a": 1}, 1j, object()):
            with self.assertRaises(TypeError, msg=repr(bad)):
                run.log("ok", bad)
        with self.assertRaises(ValueError):
            run.log("ok", 10 ** 400)
        for bad in (1.5, "3", True):
            with self.assertRaises(TypeError, msg=repr(bad)):
                run.log("ok", 1.0, step=bad)
        with self.assertRaises(ValueError):
            run.log("ok", 1.0, step=2 ** 63)
        with self.assertRaises(TypeError):
            run.log_list("l", [1, "a"])
        with self.assertRaises(ValueError):
            run.log_table("t", {"a": [1, 2], "b": [1]})
        with self.assertRaises(ValueError):
            run.log_image("i")
        with self.assertRaises(TypeError):
            run.tag(3, "x")
        run.log("x" * 250, 1.0)  # the limit itself is fine
        run.flush(10)
        self.assertEqual(list(self.twin.run().series), ["x" * 250])
        self.assertEqual(self.twin.run().entries, [])

    def test_number_like_values_are_accepted(self):
        from decimal import Decimal
        from fractions import Fraction

        class Scalar(object):  # like numpy.float32 / a 0-d tensor
            def __float__(self):
                return 2.5

        run = self.make_run()
        run.log("n", Decimal("1.5"))
        run.log("n", Fraction(1, 4))
        run.log("n", Scalar())
        run.flush(10)
        self.assertEqual([v for _, _, v in self.twin.points("run-1", "n")], [1.5, 0.25, 2.5])

    def test_many_threads_log_concurrently(self):
        run = self.make_run()
        n, per = 8, 10000

        def work(k):
            for i in range(per):
                run.log("shared", float(i), step=k * per + i)
                run.log("auto", float(k))

        threads = [threading.Thread(target=work, args=(k,)) for k in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertTrue(run.flush(30))
        steps = [s for s, _, _ in self.twin.points("run-1", "shared")]
        self.assertEqual(sorted(steps), list(range(n * per)))
        auto = self.twin.points("run-1", "auto")
        self.assertEqual(sorted(s for s, _, _ in auto), list(range(n * per)))
        self.assertEqual(sorted(v for _, _, v in auto), sorted(float(k) for k in range(n)
                                                               for _ in range(per)))

    def test_large_volume_is_batched(self):
        run = self.make_run()
        for i in range(120000):
            run.log("big", float(i))
        self.assertTrue(run.flush(30))
        pts = self.twin.points("run-1", "big")
        self.assertEqual([v for _, _, v in pts], [float(i) for i in range(120000)])
        self.assertGreaterEqual(len(self.twin.metric_requests()), 3)  # <= 50k points each

    def test_tcp_url(self):
        twin = Twin(None, runs={"run-1": "token-1"}, tcp=True).start()
        try:
            run = self.make_run(TRAINYARD_TRACKING_URL=twin.url)
            run.log("tcp", 1.0)
            run.tag("over", "tcp")
            self.assertTrue(run.flush(10))
            self.assertEqual(len(twin.points("run-1", "tcp")), 1)
            self.assertEqual(twin.run().tags, {"over": "tcp"})
        finally:
            twin.close()

    def test_keep_alive_reuses_one_connection(self):
        run = self.make_run()
        for i in range(20):
            run.log("k", float(i))
            run.flush(10)
            run.tag("i", i)
        self.assertEqual(len(self.twin.points("run-1", "k")), 20)
        self.assertLessEqual(self.twin.connections, 2)


class EntriesTest(TwinTestCase):
    def test_lists_rows_tables_images(self):
        run = self.make_run()
        png = os.path.join(self.tmp, "plot.png")
        with open(png, "wb") as f:
            f.write(PNG)
        had_matplotlib = "matplotlib" in sys.modules
        run.log_list("accs", [0.1, 0.2, math.nan], description="per class")
        run.log_row("curve", x=1, y=0.5)
        run.log_row("curve", x=2, y=0.25)
        run.log_table("tbl", {"a": [1, 2, 3], "b": [4.0, 5.0, -math.inf]})
        run.log_image("img", path=png, description="a plot")
        fig = FakeFigure()
        run.log_image("img", plot=fig)
        run.log_image("img/with space", path=png, step=42)
        self.assertTrue(run.flush(10))
        self.assertEqual(fig.formats, ["png"])
        self.assertEqual("matplotlib" in sys.modules, had_matplotlib)
        state = self.twin.run()
        kinds = [(e["name"], e["kind"]) for e in state.entries]
        self.assertEqual(kinds, [("accs", "list"), ("curve", "row"), ("curve", "row"),
                                 ("tbl", "table"), ("img", "image"), ("img", "image"),
                                 ("img/with space", "image")])
        e = state.entries
        self.assertEqual(e[0]["value"], [0.1, 0.2, "NaN"])
        self.assertEqual(e[0]["description"], "per class")
        self.assertEqual(e[1]["value"], {"x": 1.0, "y": 0.5})
        self.assertEqual(e[3]["value"], {"a": [1.0, 2.0, 3.0], "b": [4.0, 5.0, "-Infinity"]})
        self.assertEqual(e[4]["value"], {"path": "images/img/0.png"})
        self.assertEqual(e[4]["step"], 0)
        self.assertEqual(e[5]["value"], {"path": "images/img/1.png"})
        self.assertEqual(e[6]["value"], {"path": "images/img_with_space/42.png"})
        self.assertEqual(state.files["images/img/0.png"], PNG)
        self.assertEqual(state.files["images/img/1.png"], PNG + b"-figure")
        self.assertTrue(all(isinstance(x["timestamp"], int) for x in e))
        # PUT of each image came before the entry that names it (the twin refuses otherwise).
        paths = [r[1] for r in self.twin.requests]
        first_entries = min(i for i, p in enumerate(paths) if p.endswith("/entries"))
        puts = [i for i, p in enumerate(paths) if "/files/images/img/" in p]
        self.assertTrue(puts and all(i < first_entries for i in puts))

    def test_image_must_be_png(self):
        run = self.make_run()
        jpg = os.path.join(self.tmp, "x.jpg")
        with open(jpg, "wb") as f:
            f.write(b"\xff\xd8\xff\xe0 not png")
        with self.assertRaises(ValueError):
            run.log_image("i", path=jpg)

    def test_get_metrics_like_azure(self):
        run = self.make_run()
        run.log("once", 0.5)
        for v in (1.0, 2.0, 3.0):
            run.log("many", v)
        run.log_list("lst", [1, 2])
        run.log_row("rows", a=1, b=2)
        run.log_row("rows", a=3, b=4)
        run.log_table("tab", {"c": [1, 2]})
        run.log_table("tab", {"c": [3]})
        m = run.get_metrics()
        self.assertEqual(m["once"], 0.5)
        self.assertEqual(m["many"], [1.0, 2.0, 3.0])
        self.assertEqual(m["lst"], [1.0, 2.0])
        self.assertEqual(m["rows"], {"a": [1.0, 3.0], "b": [2.0, 4.0]})
        self.assertEqual(m["tab"], {"c": [1.0, 2.0, 3.0]})
        self.assertEqual(run.get_metrics("many"), {"many": [1.0, 2.0, 3.0]})
        self.assertEqual(run.get_metrics("rows"), {"rows": {"a": [1.0, 3.0], "b": [2.0, 4.0]}})
        self.assertEqual(run.get_metrics("nothing"), {})


class TagsPropertiesFilesStatusTest(TwinTestCase):
    def test_tags_are_mutable(self):
        run = self.make_run()
        run.tag("team", "vision")
        run.tag("quick")
        run.set_tags({"lr": 0.01, "team": "nlp"})
        self.assertEqual(run.get_tags(), {"team": "nlp", "quick": "", "lr": "0.01"})
        run.remove_tags(["quick"])
        self.assertEqual(self.twin.run().tags, {"team": "nlp", "lr": "0.01"})

    def test_properties_are_immutable(self):
        run = self.make_run()
        run.add_properties({"model": "resnet", "seed": 1})
        run.add_properties({"seed": "1"})  # the same value again is fine
        requests = len(self.twin.requests)
        with self.assertRaises(PropertyConflictError):
            run.add_properties({"seed": 2})
        self.assertEqual(len(self.twin.requests), requests)  # refused locally
        # Set by someone else first: the daemon's 409 becomes the exception.
        other = self.make_run()
        with self.assertRaises(ValueError) as cm:
            other.add_properties({"model": "vit"})
        self.assertIsInstance(cm.exception, PropertyConflictError)
        self.assertEqual(cm.exception.status, 409)
        self.assertIn("model", str(cm.exception))
        self.assertEqual(run.get_properties(), {"model": "resnet", "seed": "1"})

    def test_upload_file(self):
        run = self.make_run()
        path = os.path.join(self.tmp, "model.bin")
        with open(path, "wb") as f:
            f.write(b"\x00weights" * 1000)
        run.upload_file("outputs/model.bin", path)
        run.upload_file("outputs/notes.txt", io.BytesIO(b"hello"))

        class Pipe(object):  # a stream that cannot seek
            def read(self, n=-1):
                return "text from a pipe"
        run.upload_file("./logs/p.txt", Pipe())
        run.upload_file("outputs/u.txt", io.StringIO("ünïcode"))
        files = self.twin.run().files
        self.assertEqual(files["outputs/model.bin"], b"\x00weights" * 1000)
        self.assertEqual(files["outputs/notes.txt"], b"hello")
        self.assertEqual(files["logs/p.txt"], b"text from a pipe")
        self.assertEqual(files["outputs/u.txt"], "ünïcode".encode("utf-8"))
        for bad in ("../x", "/etc/passwd", "code/train.py", "user_logs/x", "a//b", ""):
            with self.assertRaises(ValueError, msg=bad):
                run.upload_file(bad, path)

    def test_complete_and_fail(self):
        run = self.make_run()
        run.log("l", 1.0)
        run.complete()
        run.fail("diverged")
        self.assertEqual(self.twin.run().statuses,
                         [{"status": "Completed", "message": ""},
                          {"status": "Failed", "message": "diverged"}])
        self.assertEqual(len(self.twin.points("run-1", "l")), 1)  # flushed before the status

    def test_identity(self):
        run = self.make_run()
        self.assertEqual((run.id, run.experiment, run.offline), ("run-1", "exp-1", False))


class FailureTest(TwinTestCase):
    def test_5xx_is_retried_without_loss_or_duplicates(self):
        run = self.make_run()
        self.twin.fail(503, "store busy", count=3, match="/metrics")
        for i in range(100):
            run.log("r", float(i))
        self.assertTrue(run.flush(20))
        self.assertEqual([v for _, _, v in self.twin.points("run-1", "r")],
                         [float(i) for i in range(100)])
        self.assertEqual([r[2] for r in self.twin.metric_requests()], [503, 503, 503, 200])

    def test_4xx_is_not_retried_and_warned_once(self):
        run = self.make_run()
        self.twin.fail(400, "series 0 (\"r\"): point 0: no good", match="/metrics")
        with captured_stderr() as err:
            run.log("r", 1.0)
            run.flush(10)
            run.log("r", 2.0)
            run.flush(10)
        self.assertEqual([r[2] for r in self.twin.metric_requests()], [400, 400])
        self.assertEqual(err.getvalue().count("no good"), 1, err.getvalue())
        self.assertEqual(run._pipe.dropped_rejected, 2)
        self.twin.fail(None)
        run.log("r", 3.0)
        run.flush(10)
        self.assertEqual([v for _, _, v in self.twin.points("run-1", "r")], [3.0])

    def test_too_large_is_413_and_not_retried(self):
        self.twin.max_body = 1000
        run = self.make_run()
        with captured_stderr() as err:
            for i in range(1000):
                run.log("big", float(i))
            run.flush(10)
        self.assertEqual([r[2] for r in self.twin.metric_requests()], [413])
        self.assertIn("larger than the limit", err.getvalue())
        self.assertEqual(run._pipe.dropped_rejected, 1000)

    def test_token_of_another_run_is_403_and_not_retried(self):
        run = self.make_run(TRAINYARD_RUN_TOKEN="token-2")
        with captured_stderr() as err:
            run.log("r", 1.0)
            run.flush(10)
        self.assertEqual([r[2] for r in self.twin.metric_requests()], [403])
        self.assertIn("not valid for run", err.getvalue())
        with self.assertRaises(TrackingError) as cm:
            run.tag("a", "b")
        self.assertEqual(cm.exception.status, 403)
        bad = self.make_run(TRAINYARD_RUN_TOKEN="nope")
        with self.assertRaises(TrackingError) as cm:
            bad.get_tags()
        self.assertEqual(cm.exception.status, 401)

    def test_daemon_down_then_back_loses_nothing(self):
        run = self.make_run()
        run.log("d", -1.0)
        run.flush(10)
        self.twin.down()
        with captured_stderr() as err:
            for i in range(10000):
                run.log("d", float(i))
            run.log_row("row", a=1)
            self.assertFalse(run.flush(1.5))  # the daemon is away: flush times out
            self.twin.up()
            self.assertTrue(run.flush(20))
        self.assertEqual([v for _, _, v in self.twin.points("run-1", "d")],
                         [-1.0] + [float(i) for i in range(10000)])
        self.assertEqual([s for s, _, _ in self.twin.points("run-1", "d")], list(range(10001)))
        self.assertEqual(len(self.twin.run().entries), 1)
        self.assertNotIn("dropping", err.getvalue())

    def test_full_buffer_drops_new_points_and_warns_once(self):
        run = self.make_run(TRAINYARD_BUFFER_POINTS="1000")
        self.twin.down()
        with captured_stderr() as err:
            for i in range(5000):
                run.log("b", float(i), step=i)
            time.sleep(1.5)  # the sender retries meanwhile
            for i in range(5000, 6000):
                run.log("b", float(i), step=i)
            self.twin.up()
            self.assertTrue(run.flush(20))
        self.assertEqual(err.getvalue().count("buffer is full"), 1, err.getvalue())
        self.assertEqual([s for s, _, _ in self.twin.points("run-1", "b")], list(range(1000)))
        self.assertEqual(run._pipe.dropped_full, 5000)
        # Once the daemon took the backlog, there is room again.
        run.log("b", 1.0, step=99999)
        run.flush(10)
        self.assertEqual(self.twin.points("run-1", "b")[-1][0], 99999)

    def test_sync_calls_retry_until_the_daemon_is_back(self):
        run = self.make_run()
        self.twin.down()
        threading.Timer(0.7, self.twin.up).start()
        run.tag("after", "restart")
        self.assertEqual(self.twin.run().tags, {"after": "restart"})

    def test_sync_calls_give_up_after_the_budget(self):
        run = self.make_run(TRAINYARD_RETRY_SECONDS="0.5")
        self.twin.down()
        t0 = time.monotonic()
        with self.assertRaises(TrackingError):
            run.get_tags()
        self.assertLess(time.monotonic() - t0, 5)


class ContextTest(unittest.TestCase):
    def test_get_context_returns_one_object(self):
        import signal
        saved_handler = signal.getsignal(signal.SIGTERM)
        self.addCleanup(signal.signal, signal.SIGTERM, saved_handler)
        saved = Run._context
        old_env = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("TRAINYARD_")}
        Run._context = None
        try:
            import tempfile
            with tempfile.TemporaryDirectory() as tmp:
                cwd = os.getcwd()
                os.chdir(tmp)
                try:
                    with captured_stderr():
                        a = Run.get_context()
                        b = Run.get_context()
                    self.assertIs(a, b)
                    self.assertTrue(a.offline)
                    with self.assertRaises(RuntimeError):
                        Run._from_environ({}, allow_offline=False)
                    a._close()
                finally:
                    os.chdir(cwd)
        finally:
            Run._context = saved
            os.environ.update(old_env)


if __name__ == "__main__":
    unittest.main()
