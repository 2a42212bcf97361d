"""trainyard.core against the real daemon (the `trainyard` binary in $TRAINYARD_CLI) and the
real Docker engine: the custom-image how-to in its three environment forms, a private registry
with good and bad credentials, a two-node PyTorch run, a failing run, Ctrl-C while streaming,
the compatibility package running the program unchanged, and installing both packages offline.

Needs dockerd, python:3.11-slim (scripts/base-images.sh) and, for the registry case, the
registry of scripts/registry.sh. With TRAINYARD_REQUIRE_SERVICES=1 (CI) a missing one fails.
The cases run in order (test_1 builds the image test_2 tags) in one workspace.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from urllib.parse import quote

from trainyard._http import Transport

SDK = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(os.path.dirname(SDK))
EXAMPLE = os.path.join(ROOT, "examples", "sdk-custom-image", "train_with_sdk.py")
COMPAT = os.path.join(ROOT, "sdk", "python-compat")
REQUIRE = os.environ.get("TRAINYARD_REQUIRE_SERVICES") == "1"


def docker(method, path):
    """One Engine API call over /var/run/docker.sock: (status, body), through the SDK's own
    HTTP client (the engine answers with both Content-Length and chunked bodies)."""
    transport = Transport("unix:///var/run/docker.sock", "", timeout=60)
    try:
        return transport.request(method, path)
    finally:
        transport.close()


def missing_services():
    cli = os.environ.get("TRAINYARD_CLI", "")
    if not cli or not os.access(cli, os.X_OK):
        return "TRAINYARD_CLI does not name the trainyard binary"
    try:
        status, _ = docker("GET", "/images/python:3.11-slim/json")
    except OSError as e:
        return "dockerd is not reachable: %s" % e
    if status != 200:
        return "python:3.11-slim is missing (scripts/base-images.sh)"
    return None


def registry_info():
    path = os.environ.get("TRAINYARD_REGISTRY_ENV", "/var/lib/trainyard-test/registry.env")
    info = {}
    try:
        with open(path) as f:
            for line in f:
                k, _, v = line.strip().partition("=")
                info[k] = v
    except OSError:
        return None
    return info if info.get("REGISTRY") and info.get("REGISTRY_IMAGE") else None


class SdkIntegrationTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        why = missing_services()
        if why:
            if REQUIRE:
                raise AssertionError("needed for the SDK integration test: " + why)
            raise unittest.SkipTest(why)
        cls.tmp = tempfile.mkdtemp(prefix="ty-sdk-int-")
        cls.home = os.path.join(cls.tmp, "workspace")
        cls.project = os.path.join(cls.tmp, "project")
        os.makedirs(cls.project)
        cls.env = dict(os.environ, TRAINYARD_HOME=cls.home, PYTHONUNBUFFERED="1",
                       PYTHONPATH=SDK)
        for k in ("TRAINYARD_URL", "TRAINYARD_TOKEN", "REGISTRY_PASSWORD"):
            cls.env.pop(k, None)

    @classmethod
    def tearDownClass(cls):
        try:
            with open(os.path.join(cls.home, "server.json")) as f:
                pid = json.load(f)["pid"]
            os.kill(pid, signal.SIGTERM)
            for _ in range(200):
                os.kill(pid, 0)
                time.sleep(0.05)
        except (OSError, ValueError, KeyError):
            pass
        shutil.rmtree(cls.tmp, ignore_errors=True)

    # --- helpers ---------------------------------------------------------------------------

    def program(self, args, env=None, timeout=1200):
        done = subprocess.run([sys.executable] + args, cwd=self.project,
                              env=dict(self.env, **(env or {})), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=timeout)
        return done.returncode, done.stdout.decode(), done.stderr.decode()

    def cli_json(self, *args):
        out = subprocess.run([os.environ["TRAINYARD_CLI"]] + list(args) + ["--output", "json"],
                             cwd=self.project, env=self.env, stdout=subprocess.PIPE,
                             check=True, timeout=120).stdout
        return json.loads(out)

    def source(self, name, text):
        folder = os.path.join(self.tmp, name)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "main.py"), "w") as f:
            f.write(text)
        return folder

    def assertStreamed(self, out, *lines):
        self.assertIn("\nStreaming user_logs/std_log.txt\n" + "=" * 31 + "\n\n", out)
        for line in lines:
            self.assertIn(line, out)
        self.assertRegex(out, r"\nExecution Summary\n=================\nRunId: \S+\nWeb View: ")

    # --- the how-to ------------------------------------------------------------------------

    def test_1_dockerfile_form_trains_the_digits_model(self):
        rc, out, err = self.program([EXAMPLE, "--form", "dockerfile", "--epochs", "2"])
        self.assertEqual(rc, 0, out + err)
        self.assertIn("STANDARD_NC6 is more than the daemon's machine has", err)
        self.assertIn('Provisioning operation finished, operation "Succeeded"', out)
        self.assertIn("'currentNodeCount': 4", out)
        self.assertIn("Streaming azureml-logs/20_image_build_log.txt", out)
        self.assertStreamed(out, "epoch   2/2", "test_acc")
        run = self.cli_json("job", "list")[0]
        self.assertEqual((run["status"], run["compute"]), ("Completed", "gpu-cluster"))
        self.assertEqual(run["experiment"], "fastai-custom-image")

    def test_2_image_form_reuses_the_cluster(self):
        image = self.cli_json("job", "list")[-1]["image"]
        self.assertTrue(image, "test_1 left no image")
        status, body = docker("POST", "/images/%s/tag?repo=fastdotai/fastai2&tag=latest"
                              % quote(image, safe=""))
        self.assertEqual(status, 201, body)
        rc, out, err = self.program([EXAMPLE, "--form", "image", "--epochs", "1"])
        self.assertEqual(rc, 0, out + err)
        self.assertIn("Found existing compute target.", out)
        self.assertStreamed(out, "epoch   1/1")

    def test_3_private_registry_with_good_and_bad_credentials(self):
        info = registry_info()
        if info is None:
            if REQUIRE:
                self.fail("the test registry is not running (scripts/registry.sh)")
            self.skipTest("no test registry")
        src = self.source("hello", "print('hello from the registry image', flush=True)\n")
        args = [EXAMPLE, "--form", "registry", "--registry", info["REGISTRY"], "--image",
                info["REGISTRY_IMAGE"], "--source", src, "--script", "main.py",
                "--cluster", "cpu-cluster"]
        good = {"REGISTRY_USER": info["REGISTRY_USER"],
                "REGISTRY_PASSWORD": info["REGISTRY_PASSWORD"]}
        rc, out, err = self.program(args, good)
        self.assertEqual(rc, 0, out + err)
        self.assertStreamed(out, "hello from the registry image")
        self.assertNotIn(info["REGISTRY_PASSWORD"], out + err)
        bad = dict(good, REGISTRY_PASSWORD="not-the-password")
        # A new image name, so the pull is not answered from the engine's cache.
        rc, out, err = self.program(args[:6] + [info["REGISTRY_IMAGE"].replace(
            ":3.11-slim", ":absent-tag")] + args[7:], bad)
        self.assertNotEqual(rc, 0, out)
        self.assertIn("ActivityFailedException", err)
        self.assertIn("unauthorized", (out + err).lower())
        self.assertNotIn("not-the-password", out + err)

    def test_4_pytorch_configuration_runs_two_nodes(self):
        src = self.source("ranks", (
            "import os\n"
            "print('node %s rank %s of %s via %s' % (os.environ['AZ_BATCHAI_TASK_INDEX'], "
            "os.environ['RANK'], os.environ['WORLD_SIZE'], os.environ['MASTER_ADDR']), "
            "flush=True)\n"))
        code = (
            "from trainyard.core import *\n"
            "ws = Workspace.from_config()\n"
            "cfg = AmlCompute.provisioning_configuration(max_nodes=2, node_cpus=1)\n"
            "target = ComputeTarget.create(ws, 'two-nodes', cfg)\n"
            "env = Environment('plain')\n"
            "env.docker.base_image = 'python:3.11-slim'\n"
            "env.python.user_managed_dependencies = True\n"
            "built = env.register(ws).build(ws)\n"
            "print('BUILT', built.status, built.image)\n"
            "src = ScriptRunConfig(source_directory=%r, script='main.py', compute_target=target,\n"
            "    environment=env, distributed_job_config=PyTorchConfiguration(node_count=2))\n"
            "run = Experiment(ws, 'ranks').submit(src)\n"
            "details = run.wait_for_completion(show_output=True)\n"
            "print('STATUS', details['status'], sorted(run.get_file_names()))\n" % src)
        rc, out, err = self.program(["-c", code])
        self.assertEqual(rc, 0, out + err)
        self.assertIn("STATUS Completed", out)
        self.assertRegex(out, r"BUILT Succeeded \S+")
        self.assertStreamed(out)
        ranks = set(re.findall(r"node (\d) rank (\d) of 2 via node-0", out))
        files = out[out.index("STATUS"):]
        # The merged log shows rank 0; the other node's log is a file of the run.
        self.assertIn(("0", "0"), ranks, out)
        self.assertIn("logs/", files)

    def test_5_a_failing_run_raises_and_ctrl_c_leaves_a_run_going(self):
        src = self.source("fails", "import sys\nprint('about to fail', flush=True)\n"
                                   "sys.exit(3)\n")
        code = (
            "from trainyard.core import *\n"
            "ws = Workspace.from_config()\n"
            "env = Environment('plain')\n"
            "env.docker.base_image = 'python:3.11-slim'\n"
            "env.python.user_managed_dependencies = True\n"
            "src = ScriptRunConfig(source_directory=%r, script='main.py', environment=env)\n"
            "Experiment(ws, 'fails').submit(src).wait_for_completion(show_output=True)\n" % src)
        rc, out, err = self.program(["-c", code])
        self.assertNotEqual(rc, 0)
        self.assertStreamed(out, "about to fail", "\nError:\n{\n    \"error\": {")
        self.assertIn("ActivityFailedException: Activity Failed:", err)
        self.assertIn("script exited with code 3", err)

        slow = self.source("slow", "import time\nprint('started', flush=True)\n"
                                   "time.sleep(120)\n")
        code = code.replace(repr(src), repr(slow)).replace("'fails'", "'slow'")
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=self.project, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        seen = b""
        deadline = time.monotonic() + 300
        while b"started" not in seen and time.monotonic() < deadline:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            seen += chunk
        self.assertIn(b"started", seen)
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn(b"the run is still executing on the compute target", err)
        slow_run = self.cli_json("job", "list", "--experiment", "slow")[0]
        self.assertEqual(slow_run["status"], "Running")
        subprocess.run([os.environ["TRAINYARD_CLI"], "job", "cancel", slow_run["name"]],
                       cwd=self.project, env=self.env, check=True, timeout=120,
                       stdout=subprocess.DEVNULL)

    def test_6_the_compatibility_package_runs_the_program_unchanged(self):
        with open(EXAMPLE) as f:
            text = f.read()
        # The how-to's own import lines.
        text = text.replace("from trainyard.core import", "from azureml.core import")
        text = text.replace("from trainyard.core.compute import", "from azureml.core.compute import")
        text = text.replace("from trainyard.core.compute_target import",
                            "from azureml.core.compute_target import")
        self.assertNotIn("from trainyard", text)
        program = os.path.join(self.tmp, "howto_azureml.py")
        with open(program, "w") as f:
            f.write(text.replace("here = os.path.dirname(os.path.abspath(__file__))",
                                 "here = %r" % os.path.dirname(EXAMPLE)))
        rc, out, err = self.program([program, "--form", "image", "--epochs", "1"],
                                    {"PYTHONPATH": SDK + os.pathsep + COMPAT})
        self.assertEqual(rc, 0, out + err)
        self.assertStreamed(out, "epoch   1/1")

    def test_8_workspace_connect_never_prints_the_token_to_a_terminal(self):
        import pty
        main, child = pty.openpty()
        try:
            done = subprocess.run([os.environ["TRAINYARD_CLI"], "workspace", "connect"],
                                  cwd=self.project, env=self.env, stdout=child,
                                  stderr=subprocess.PIPE, timeout=120)
            os.close(child)
            child = -1
            shown = b""
            while True:
                try:
                    chunk = os.read(main, 4096)
                except OSError:  # the terminal's other end is closed: all was read
                    break
                if not chunk:
                    break
                shown += chunk
        finally:
            os.close(main)
            if child >= 0:
                os.close(child)
        self.assertNotEqual(done.returncode, 0)
        self.assertIn(b"does not print it to a terminal", done.stderr)
        with open(os.path.join(self.home, "server.json")) as f:
            token = json.load(f)["token"]
        self.assertNotIn(token.encode(), shown + done.stderr)

    def test_7_both_packages_install_offline(self):
        venv = os.path.join(self.tmp, "venv")
        subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", venv],
                       check=True, timeout=300)
        pip = subprocess.run([os.path.join(venv, "bin", "pip"), "install", "--no-index",
                              "--no-build-isolation", SDK, COMPAT], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, timeout=600)
        self.assertEqual(pip.returncode, 0, pip.stdout.decode())
        check = subprocess.run(
            [os.path.join(venv, "bin", "python"), "-c",
             "import trainyard.core, azureml.core, azureml.exceptions, os;"
             "from azureml.core.compute_target import ComputeTargetException as E;"
             "assert E is trainyard.core.ComputeTargetException;"
             "print(os.path.dirname(trainyard.__file__))"],
            cwd=self.tmp, env=dict(os.environ, PYTHONPATH=""), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, timeout=60)
        self.assertEqual(check.returncode, 0, check.stderr.decode())
        self.assertTrue(check.stdout.decode().strip().startswith(venv))


if __name__ == "__main__":
    unittest.main()
