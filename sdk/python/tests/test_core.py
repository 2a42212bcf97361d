"""trainyard.core against the in-memory workspace twin and a stand-in trainyard command."""

import contextlib
import io
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import unittest

from tests.workspace_twin import WorkspaceTwin
from trainyard.core import (ActivityFailedException, AmlCompute, ComputeTarget,
                            ComputeTargetException, CondaDependencies, DockerConfiguration,
                            Environment, Experiment, ExperimentExecutionException,
                            PyTorchConfiguration, Run, ScriptRunConfig, UserErrorException,
                            Workspace)
from trainyard.core.exceptions import RunConfigurationException, SnapshotException


class ImportFootprintTest(unittest.TestCase):
    def test_the_how_to_import_line_loads_no_heavy_module(self):
        # bench/sdk.sh measures the import time; this keeps what made it slow from coming back
        # unnoticed: the in-run tracking package, http.client (and email), ssl, logging,
        # typing, urllib.parse, subprocess.
        sdk = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        code = ("import sys; before = set(sys.modules); sys.path.insert(0, %r)\n"
                "from trainyard.core import Workspace, Environment, ScriptRunConfig, Experiment\n"
                "print(' '.join(sorted(set(sys.modules) - before)))" % sdk)
        import subprocess
        out = subprocess.run([sys.executable, "-I", "-c", code], check=True,
                             stdout=subprocess.PIPE).stdout.decode().split()
        self.assertIn("trainyard.core.experiment", out)
        heavy = {"trainyard.run", "trainyard._backends", "http.client", "email", "ssl",
                 "logging", "typing", "urllib.parse", "subprocess", "socket"}
        self.assertEqual(sorted(heavy.intersection(out)), [])


class CoreTestCase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ty-core-")
        self.twin = WorkspaceTwin(self.tmp).start()
        self._old_cli = os.environ.get("TRAINYARD_CLI")
        os.environ["TRAINYARD_CLI"] = self.twin.write_cli()
        self.project = os.path.join(self.tmp, "project")
        os.makedirs(os.path.join(self.project, "src"))
        with open(os.path.join(self.project, "src", "train.py"), "w") as f:
            f.write("print('training')\n")
        self.ws = Workspace.from_config(self.project)

    def tearDown(self):
        if self._old_cli is None:
            os.environ.pop("TRAINYARD_CLI", None)
        else:
            os.environ["TRAINYARD_CLI"] = self._old_cli
        self.twin.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def posted(self, path):
        return [doc for m, p, doc in self.twin.requests_json if m == "POST" and p == path]

    def submit(self, workspace=None, **kwargs):
        env = kwargs.pop("environment", None)
        if env is None:
            env = Environment("e")
            env.docker.base_image = "python:3.11-slim"
            env.python.user_managed_dependencies = True
        src = ScriptRunConfig(source_directory=os.path.join(self.project, "src"),
                              script="train.py", environment=env, **kwargs)
        return Experiment(workspace or self.ws, "exp").submit(src)


class WorkspaceTest(CoreTestCase):
    def test_from_config_asks_the_cli_from_the_start_folder(self):
        calls = self.twin.cli_calls()
        self.assertEqual(calls[0]["args"], ["workspace", "connect"])
        self.assertEqual(os.path.realpath(calls[0]["cwd"]), os.path.realpath(self.project))
        self.assertEqual(self.ws.folder, self.tmp)

    def test_a_service_config_lends_its_workspace_name(self):
        os.makedirs(os.path.join(self.project, ".azureml"))
        with open(os.path.join(self.project, ".azureml", "config.json"), "w") as f:
            json.dump({"subscription_id": "s", "resource_group": "g",
                       "workspace_name": "team-ws"}, f)
        deep = os.path.join(self.project, "src")
        ws = Workspace.from_config(deep)
        self.assertEqual(ws.name, "team-ws")
        self.assertEqual(ws.subscription_id, "s")

    def test_a_missing_cli_is_a_clear_error(self):
        os.environ["TRAINYARD_CLI"] = os.path.join(self.tmp, "nope")
        from trainyard.core.exceptions import ProjectSystemException
        with self.assertRaisesRegex(ProjectSystemException, "TRAINYARD_CLI names"):
            Workspace.from_config(self.project)


class RunCliTest(unittest.TestCase):
    """run_cli starts the trainyard command with posix_spawn and two pipes."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ty-cli-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self._old = os.environ.get("TRAINYARD_CLI")
        self.addCleanup(self._restore)

    def _restore(self):
        if self._old is None:
            os.environ.pop("TRAINYARD_CLI", None)
        else:
            os.environ["TRAINYARD_CLI"] = self._old

    def cli(self, body):
        path = os.path.join(self.tmp, "cli.sh")
        with open(path, "w") as f:
            f.write("#!/bin/sh\n" + body)
        os.chmod(path, 0o755)
        os.environ["TRAINYARD_CLI"] = path

    def test_arguments_folder_and_both_streams_in_full(self):
        from trainyard.core._connection import run_cli
        # 1 MiB on each stream: read together, neither pipe fills and blocks the other.
        self.cli('echo "$@"; pwd; head -c 1048576 /dev/zero | tr "\\0" e >&2; '
                 'head -c 1048576 /dev/zero | tr "\\0" o; cat; echo "TY=$TRAINYARD_CLI"')
        out = run_cli(["workspace", "connect"], self.tmp, "testing")
        lines = out.split("\n")
        self.assertEqual(lines[0], "-C %s workspace connect" % self.tmp)
        self.assertEqual(lines[1], os.getcwd())  # the folder goes to trainyard as -C
        # All of stdout; stdin empty (cat adds nothing); TRAINYARD_CLI not passed on.
        self.assertEqual(lines[2], "o" * (1 << 20) + "TY=")

    def test_failure_says_what_and_the_commands_message(self):
        from trainyard.core._connection import run_cli
        self.cli('echo "error: the workspace is gone" >&2; exit 3')
        with self.assertRaisesRegex(UserErrorException,
                                    "^finding it failed: the workspace is gone$"):
            run_cli(["x"], self.tmp, "finding it")
        self.cli("kill -9 $$")
        with self.assertRaisesRegex(UserErrorException, "exit code -9"):
            run_cli(["x"], self.tmp, "finding it")

    def test_many_open_descriptors_default_signals_and_no_leak(self):
        from trainyard.core._connection import run_cli
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < 1200:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
            self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        # The pipes get numbers above 1023, which select() cannot wait on.
        held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
        try:
            # SIGPIPE as a shell leaves it: `yes` dies quietly when `head` stops reading.
            self.cli('yes 2>"$0.err" | head -n 1 >/dev/null; cat "$0.err"; echo done')
            self.assertEqual(run_cli(["x"], self.tmp, "testing"), "done\n")
        finally:
            for fd in held:
                os.close(fd)
        before = len(os.listdir("/proc/self/fd"))
        self.cli("")
        with open(os.environ["TRAINYARD_CLI"], "wb") as f:
            f.write(b"\x7fELF not really")  # executable, but not a program
        from trainyard.core.exceptions import ProjectSystemException
        with self.assertRaisesRegex(ProjectSystemException, "could not run"):
            run_cli(["x"], self.tmp, "testing")
        self.assertEqual(len(os.listdir("/proc/self/fd")), before)

    def test_a_command_over_its_time_is_killed(self):
        from trainyard.core._connection import run_cli
        from trainyard.core.exceptions import ProjectSystemException
        marker = os.path.join(self.tmp, "pid")
        self.cli("echo $$ > %s; exec sleep 30" % marker)
        started = time.monotonic()
        with self.assertRaisesRegex(ProjectSystemException, "took longer than 1 s"):
            run_cli(["x"], self.tmp, "waiting", timeout=1)
        self.assertLess(time.monotonic() - started, 10)
        with open(marker) as f:
            pid = int(f.read())
        with self.assertRaises(OSError):  # killed and reaped: no such process
            os.kill(pid, 0)


class EnvironmentTest(CoreTestCase):
    def test_base_image_with_user_managed_dependencies(self):
        env = Environment("fastai2")
        env.docker.enabled = True
        env.docker.base_image = "fastdotai/fastai2:latest"
        env.python.user_managed_dependencies = True
        d = env._definition(self.ws)
        self.assertEqual(d["image"], "fastdotai/fastai2:latest")
        self.assertTrue(d["user_managed_dependencies"])
        self.assertNotIn("conda", d)
        self.assertNotIn("dockerfile", d)

    def test_the_default_image_is_the_workspaces(self):
        self.twin.default_image = "local/base:1"
        d = Environment("plain")._definition(Workspace.from_config(self.project))
        self.assertEqual(d["image"], "local/base:1")

    def test_a_dockerfile_path_is_read_at_assignment_and_resets_the_image(self):
        path = os.path.join(self.project, "Dockerfile")
        with open(path, "w") as f:
            f.write("FROM python:3.11-slim\nRUN echo hi\n")
        env = Environment("df")
        env.docker.base_image = "x:1"
        with self.assertLogs("trainyard.core.environment", "WARNING") as logs:
            env.docker.base_dockerfile = path
        self.assertIn("Property base_image is mutually exclusive with base_dockerfile. "
                      "Reset base_image to None", logs.output[0])
        os.remove(path)  # read already
        d = env._definition(self.ws)
        self.assertEqual(d["dockerfile"], "FROM python:3.11-slim\nRUN echo hi\n")
        self.assertNotIn("image", d)
        # Setting the image again resets the Dockerfile, with the service's warning.
        with self.assertLogs("trainyard.core.environment", "WARNING") as logs:
            env.docker.base_image = "y:2"
        self.assertIn("Property base_dockerfile is mutually exclusive with base_image. "
                      "Reset base_dockerfile to None", logs.output[0])
        self.assertIsNone(env.docker.base_dockerfile)

    def test_a_dockerfile_path_that_does_not_exist_is_an_error(self):
        env = Environment("df")
        with self.assertRaisesRegex(UserErrorException, "names no file"):
            env.docker.base_dockerfile = "./Dockerfile.missing"

    def test_registry_credentials_go_to_the_daemon_and_not_back(self):
        env = Environment("private")
        env.docker.base_image = "127.0.0.1:5000/team/img:1"
        env.docker.base_image_registry.address = "127.0.0.1:5000"
        env.docker.base_image_registry.username = "ci"
        env.docker.base_image_registry.password = "s3cret"
        env.python.user_managed_dependencies = True
        registered = env.register(self.ws)
        sent = self.posted("/api/v1/environments")[-1]
        self.assertEqual(sent["image_registry"],
                         {"address": "127.0.0.1:5000", "username": "ci", "password": "s3cret"})
        self.assertEqual(registered.version, "1")
        fetched = Environment.get(self.ws, "private")
        self.assertIsNone(fetched.docker.base_image_registry.password)
        self.assertEqual(fetched.docker.base_image_registry.username, "ci")
        self.assertNotIn("s3cret", repr(fetched))
        self.assertNotIn("s3cret", repr(env))

    def test_register_versions_get_and_list(self):
        env = Environment("sk")
        env.python.conda_dependencies = CondaDependencies.create(
            pip_packages=["scikit-learn==1.2.1"], python_version="3.11")
        self.assertEqual(env.register(self.ws).version, "1")
        self.assertEqual(env.register(self.ws).version, "1")  # unchanged: the same version
        env.python.conda_dependencies.add_pip_package("numpy")
        self.assertEqual(env.register(self.ws).version, "2")
        self.assertEqual(Environment.get(self.ws, "sk", version="1").version, "1")
        self.assertEqual(Environment.get(self.ws, "sk").version, "2")
        self.assertEqual(Environment.list(self.ws)["sk"].version, "2")
        got = Environment.get(self.ws, "sk")
        self.assertIn("numpy", list(got.python.conda_dependencies.pip_packages))
        with self.assertRaisesRegex(UserErrorException, "Only one of version or label"):
            Environment.get(self.ws, "sk", version="1", label="latest")
        with self.assertRaisesRegex(UserErrorException, "not found"):
            Environment.get(self.ws, "nope")

    def test_build_registers_then_builds(self):
        env = Environment("b")
        env.python.user_managed_dependencies = True
        with self.assertLogs("trainyard.core.environment", "WARNING") as logs:
            details = env.build(self.ws)
        self.assertIn("Building a non-registered environment is not supported", logs.output[0])
        self.assertEqual(details.status, "Succeeded")
        self.assertTrue(details.image.startswith("trainyard/env:"))
        self.assertIn("Step 1/1", details.get_log())
        self.assertIn(("POST", "/api/v1/environments/b/versions/1/build"),
                      [(m, p) for m, p, _ in self.twin.requests_json])

    def test_managed_dependencies_send_the_conda_file(self):
        env = Environment("m")
        env.python.conda_dependencies = CondaDependencies.create(pip_packages=["a==1"],
                                                                python_version="3.11")
        d = env._definition(self.ws)
        self.assertIn("- a==1", d["conda"]["text"])
        self.assertFalse(d["user_managed_dependencies"])

    def test_save_and_load_from_directory(self):
        env = Environment.from_dockerfile("d", "FROM x\n", pip_requirements=None)
        env.python.interpreter_path = "/opt/py/bin/python"
        folder = os.path.join(self.tmp, "saved")
        env.save_to_directory(folder)
        with self.assertRaises(FileExistsError):
            env.save_to_directory(folder)
        back = Environment.load_from_directory(folder)
        self.assertEqual(back.docker.base_dockerfile, "FROM x\n")
        self.assertEqual(back.python.interpreter_path, "/opt/py/bin/python")
        self.assertTrue(back.python.user_managed_dependencies)

    def test_a_conda_file_goes_to_the_daemon_as_written(self):
        path = os.path.join(self.tmp, "environment.yml")
        text = ("name: t\nchannels: [conda-forge]\ndependencies:\n  - python=3.10\n"
                "  - pip: [numpy, pandas]\n")
        with open(path, "w") as f:
            f.write(text)
        env = Environment.from_conda_specification("c", path)
        self.assertEqual(env._definition(self.ws)["conda"]["text"], text)
        with self.assertRaisesRegex(UserErrorException, "change the file itself"):
            env.python.conda_dependencies.add_pip_package("scipy")
        with open(path, "w") as f:
            f.write("dependencies:\n  - python=3.10\n  - pip: [numpy, pandas]\n")
        env = Environment.from_conda_specification("c", path)
        self.assertEqual(list(env.python.conda_dependencies.pip_packages), ["numpy", "pandas"])
        env.python.conda_dependencies.add_pip_package("scipy")
        self.assertIn("- scipy", env._definition(self.ws)["conda"]["text"])

    def test_a_fetched_environment_changed_is_sent_whole(self):
        env = Environment("f")
        env.python.user_managed_dependencies = True
        env.register(self.ws)
        fetched = Environment.get(self.ws, "f")
        self.submit(environment=fetched)
        self.assertEqual(self.posted("/api/v1/jobs")[-1]["environment_name"], "f")
        fetched.docker.base_image = "other:1"
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            self.submit(environment=fetched)
        sent = self.posted("/api/v1/jobs")[-1]
        self.assertEqual(sent["environment"]["image"], "other:1")
        self.assertIn("was changed after it was fetched", err.getvalue())

    def test_clone_and_pip_requirements(self):
        req = os.path.join(self.tmp, "requirements.txt")
        with open(req, "w") as f:
            f.write("# comment\nscikit-learn==1.2.1\n--extra-index-url http://mirror\n")
        env = Environment.from_pip_requirements("p", req)
        self.assertEqual(list(env.python.conda_dependencies.pip_packages),
                         ["scikit-learn==1.2.1"])
        with open(req, "a") as f:
            f.write("-r other.txt\n")
        with self.assertRaisesRegex(UserErrorException, "requirements.txt:4"):
            Environment.from_pip_requirements("p", req)
        c = env.clone("p2")
        self.assertEqual((c.name, c.version), ("p2", None))
        with self.assertRaises(UserErrorException):
            env.clone("")


class CondaDependenciesTest(unittest.TestCase):
    def test_round_trip_and_replacement(self):
        cd = CondaDependencies.create(conda_packages=["numpy"], pip_packages=["torch==2.0"],
                                      python_version="3.10")
        cd.add_pip_package("torch==2.1")
        cd.add_channel("pytorch")
        back = CondaDependencies._from_text(cd.serialize_to_string())
        self.assertEqual(list(back.pip_packages), ["torch==2.1"])
        self.assertEqual(back.get_python_version(), "3.10")
        self.assertIn("pytorch", list(back.conda_channels))
        self.assertEqual(back, cd)

    def test_reads_a_common_environment_file_and_names_bad_lines(self):
        cd = CondaDependencies._from_text(
            "name: t\nchannels:\n  - conda-forge\ndependencies:\n  - python=3.9\n"
            "  - pip:\n    - requests  # latest\n")
        self.assertEqual(list(cd.pip_packages), ["requests"])
        with self.assertRaisesRegex(UserErrorException, "environment.yml:2"):
            CondaDependencies._from_text("name: t\nweird: 1\n", "environment.yml")


class ComputeTest(CoreTestCase):
    def test_an_absent_target_raises_the_services_exception(self):
        with self.assertRaises(ComputeTargetException) as e:
            ComputeTarget(workspace=self.ws, name="gpu-cluster")
        self.assertEqual(str(e.exception), "ComputeTargetNotFound: Compute Target with name "
                         "gpu-cluster not found in provided workspace")

    def test_a_gpu_size_on_a_gpu_machine_keeps_its_gpu(self):
        self.twin.machine = {"cpus": 16.0, "memory_bytes": 64 << 30, "gpus": 2}
        config = AmlCompute.provisioning_configuration(vm_size="STANDARD_NC6", max_nodes=2)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            ComputeTarget.create(self.ws, "gpu-cluster", config)
        sent = self.posted("/api/v1/computes")[-1]
        self.assertEqual((sent["node_cpus"], sent["node_memory_bytes"], sent["node_gpus"]),
                         (6.0, 56 << 30, 1))
        self.assertEqual(err.getvalue(), "")

    def test_a_gpu_size_on_a_small_machine_is_reduced_with_a_warning(self):
        config = AmlCompute.provisioning_configuration(vm_size="STANDARD_NC6", max_nodes=4)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            target = ComputeTarget.create(self.ws, "gpu-cluster", config)
        sent = self.posted("/api/v1/computes")[-1]
        self.assertEqual(sent["max_nodes"], 4)
        self.assertEqual(sent["node_cpus"], 2.0)  # the twin's machine
        self.assertEqual(sent["node_memory_bytes"], 4 << 30)
        self.assertEqual(sent["node_gpus"], 0)
        self.assertIn("STANDARD_NC6", err.getvalue())
        self.assertIn("no GPU", err.getvalue())
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            target.wait_for_completion(show_output=True)
        self.assertIn('Provisioning operation finished, operation "Succeeded"', out.getvalue())
        status = target.get_status().serialize()
        self.assertEqual(set(status), {
            "currentNodeCount", "targetNodeCount", "nodeStateCounts", "allocationState",
            "allocationStateTransitionTime", "errors", "creationTime", "modifiedTime",
            "provisioningState", "provisioningStateTransitionTime", "scaleSettings",
            "vmPriority", "vmSize"})
        self.assertEqual(status["currentNodeCount"], 4)
        self.assertEqual(status["nodeStateCounts"]["idleNodeCount"], 4)
        self.assertEqual(status["scaleSettings"]["maxNodeCount"], 4)
        found = ComputeTarget(workspace=self.ws, name="gpu-cluster")
        self.assertIsInstance(found, AmlCompute)

    def test_an_unknown_size_lists_the_known_ones(self):
        with self.assertRaisesRegex(ComputeTargetException, "STANDARD_D2_V2.*node_cpus"):
            AmlCompute.provisioning_configuration(vm_size="STANDARD_XYZ", max_nodes=1)
        with self.assertRaisesRegex(ComputeTargetException, "max nodes count is mandatory"):
            AmlCompute.provisioning_configuration(vm_size="STANDARD_D2_V2")

    def test_reserved_names_and_direct_sizes(self):
        cfg = AmlCompute.provisioning_configuration(max_nodes=2, node_cpus=1, node_memory_gb=1)
        with self.assertRaisesRegex(UserErrorException, "reserved name"):
            ComputeTarget.create(self.ws, "local", cfg)
        ComputeTarget.create(self.ws, "small", cfg)
        self.assertEqual(self.posted("/api/v1/computes")[-1]["node_cpus"], 1.0)


class SubmitTest(CoreTestCase):
    def test_submit_sends_the_run(self):
        env = Environment("e")
        env.docker.base_image = "python:3.11-slim"
        env.python.user_managed_dependencies = True
        src = ScriptRunConfig(source_directory=os.path.join(self.project, "src"),
                              script="train.py", arguments=["--lr", 0.5, "--n", 3, "--x", True,
                                                            "it's"])
        src.run_config.environment = env
        src.run_config.environment_variables = {"A": 1}
        run = Experiment(self.ws, "exp").submit(src, tags={"t": "1"})
        sent = self.posted("/api/v1/jobs")[-1]
        self.assertEqual(sent["command"], "python train.py --lr 0.5 --n 3 --x True 'it'\"'\"'s'")
        self.assertEqual(sent["experiment_name"], "exp")
        self.assertEqual(sent["compute"], "local")
        self.assertEqual(sent["environment"]["image"], "python:3.11-slim")
        self.assertEqual(sent["environment_variables"], {"A": "1"})
        self.assertEqual(sent["tags"], {"t": "1"})
        self.assertEqual(len(sent["snapshot_id"]), 64)
        self.assertEqual(run.id, "exp_1")
        self.assertEqual(run.get_status(), "Queued")
        # A local workspace's daemon snapshots the folder itself: no second process.
        self.assertEqual(self.posted("/api/v1/snapshots/from-folder")[-1],
                         {"path": os.path.join(self.project, "src")})
        calls = [c["args"][:2] for c in self.twin.cli_calls()]
        self.assertNotIn(["snapshot", "create"], calls)

    def test_a_remote_workspace_snapshots_with_the_cli(self):
        os.environ["TWIN_REMOTE"] = "1"
        try:
            ws = Workspace.from_config(self.project)
            run = self.submit(workspace=ws)
        finally:
            del os.environ["TWIN_REMOTE"]
        self.assertEqual(self.posted("/api/v1/snapshots/from-folder"), [])
        calls = [c["args"][:3] for c in self.twin.cli_calls()]
        self.assertIn(["snapshot", "create", os.path.join(self.project, "src")], calls)
        self.assertEqual(len(self.posted("/api/v1/jobs")[-1]["snapshot_id"]), 64)
        self.assertEqual(run.get_status(), "Queued")

    def test_a_registered_environment_is_sent_by_name(self):
        env = Environment("reg")
        env.python.user_managed_dependencies = True
        registered = env.register(self.ws)
        self.submit(environment=registered)
        sent = self.posted("/api/v1/jobs")[-1]
        self.assertEqual((sent["environment_name"], sent["environment_version"]), ("reg", "1"))
        self.assertNotIn("environment", sent)

    def test_mistakes_raise_the_services_exceptions(self):
        src = ScriptRunConfig(source_directory=os.path.join(self.project, "src"),
                              script="train.py", command="python train.py")
        with self.assertRaisesRegex(RunConfigurationException, "Both command and script"):
            Experiment(self.ws, "exp").submit(src)
        src = ScriptRunConfig(source_directory=os.path.join(self.project, "nope"),
                              script="train.py")
        with self.assertRaisesRegex(UserErrorException, "is not a folder"):
            Experiment(self.ws, "exp").submit(src)
        with self.assertRaisesRegex(ComputeTargetException, "does not exist"):
            self.submit(compute_target="nowhere")
        os.environ["TWIN_SNAPSHOT_MAX_FILES"] = "0"
        try:
            with self.assertRaisesRegex(SnapshotException, "over the limit"):
                self.submit()
        finally:
            del os.environ["TWIN_SNAPSHOT_MAX_FILES"]

    def test_classic_run_configurations_and_docker_arguments(self):
        from trainyard.core import RunConfiguration
        rc = RunConfiguration()
        rc.node_count = 2
        rc.communicator = "IntelMpi"
        rc.mpi.process_count_per_node = 2
        env = Environment("e")
        env.python.user_managed_dependencies = True
        rc.environment = env
        rc.docker.arguments = ["--shm-size", "512m"]
        src = ScriptRunConfig(source_directory=os.path.join(self.project, "src"),
                              script="train.py", run_config=rc)
        ComputeTarget.create(self.ws, "two", AmlCompute.provisioning_configuration(
            max_nodes=2, node_cpus=1))
        rc.target = "two"
        Experiment(self.ws, "exp").submit(src)
        sent = self.posted("/api/v1/jobs")[-1]
        self.assertEqual(sent["instance_count"], 2)
        self.assertEqual(sent["distribution"], {"type": "mpi", "process_count_per_instance": 2})
        self.assertEqual(sent["shm_size_bytes"], 512 << 20)
        rc.docker.arguments = ["--privileged"]
        with self.assertRaisesRegex(UserErrorException, "--privileged"):
            Experiment(self.ws, "exp").submit(src)

    def test_a_command_list_is_quoted_word_by_word(self):
        src = ScriptRunConfig(source_directory=os.path.join(self.project, "src"),
                              command=["python", "train.py", "--name", "my run; rm -rf x",
                                       "&&", "echo", "done"])
        self.assertEqual(src._command(),
                         "python train.py --name 'my run; rm -rf x' && echo done")

    def test_get_runs_and_experiments(self):
        first = self.submit()
        second = self.submit()
        self.assertEqual([r.id for r in Experiment(self.ws, "exp").get_runs()],
                         [second.id, first.id])
        self.assertEqual(list(self.ws.experiments), ["exp"])

    def test_pytorch_two_nodes(self):
        cfg = AmlCompute.provisioning_configuration(max_nodes=2, node_cpus=1)
        target = ComputeTarget.create(self.ws, "two", cfg)
        self.submit(compute_target=target,
                    distributed_job_config=PyTorchConfiguration(node_count=2),
                    docker_runtime_config=DockerConfiguration(shm_size="1g"))
        sent = self.posted("/api/v1/jobs")[-1]
        self.assertEqual(sent["instance_count"], 2)
        self.assertEqual(sent["distribution"], {"type": "pytorch",
                                                "process_count_per_instance": 1})
        self.assertEqual(sent["compute"], "two")
        self.assertEqual(sent["shm_size_bytes"], 1 << 30)
        with self.assertRaisesRegex(RunConfigurationException, "not a supported backend"):
            PyTorchConfiguration(communication_backend="mpi")


class WaitTest(CoreTestCase):
    def play(self, run, steps):
        def go():
            for step in steps:
                time.sleep(0.05)
                self.twin.advance(run.id, **step)
        t = threading.Thread(target=go, daemon=True)
        t.start()
        return t

    def test_show_output_streams_the_log_then_the_summary(self):
        run = self.submit()
        t = self.play(run, [{"status": "Preparing", "build": "Step 1/2\n"},
                            {"status": "Running", "log": "epoch 1\n"},
                            {"log": "epoch 2\n"}, {"status": "Completed"}])
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            details = run.wait_for_completion(show_output=True)
        t.join()
        url = run.get_portal_url()
        self.assertEqual(out.getvalue(), (
            "RunId: {id}\nWeb View: {url}\n"
            "\nStreaming azureml-logs/20_image_build_log.txt\n" + "=" * 45 + "\n\n"
            "Step 1/2\n"
            "\nStreaming user_logs/std_log.txt\n" + "=" * 31 + "\n\n"
            "epoch 1\nepoch 2\n"
            "\nExecution Summary\n=================\nRunId: {id}\nWeb View: {url}\n\n"
        ).format(id=run.id, url=url))
        self.assertEqual(details["status"], "Completed")
        self.assertEqual(details["runId"], run.id)
        self.assertIn("runDefinition", details)
        self.assertNotIn("error", details)

    def test_a_failed_run_raises_with_the_reason(self):
        run = self.submit()
        self.play(run, [{"status": "Running", "log": "boom\n"},
                        {"status": "Failed", "failure_reason": "script exit code 3",
                         "exit_code": 3}])
        out = io.StringIO()
        with contextlib.redirect_stdout(out), \
                self.assertRaises(ActivityFailedException) as e:
            run.wait_for_completion(show_output=True)
        self.assertIn("Activity Failed:", str(e.exception))
        self.assertIn("script exit code 3", str(e.exception))
        self.assertIn("\nError:\n{\n    \"error\": {", out.getvalue())
        details = run.wait_for_completion(raise_on_error=False)
        self.assertEqual(details["error"]["error"]["message"], "script exit code 3")

    def test_waiting_outlives_a_daemon_restart(self):
        run = self.submit()
        self.twin.advance(run.id, status="Running", log="before\n")

        def restart():
            time.sleep(0.3)
            self.twin.down()
            time.sleep(1.0)
            self.twin.up()
            time.sleep(0.2)
            self.twin.advance(run.id, status="Completed", log="after\n")
        t = threading.Thread(target=restart, daemon=True)
        t.start()
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            details = run.wait_for_completion(show_output=True)
        t.join()
        self.assertEqual(details["status"], "Completed")
        self.assertIn("before\nafter\n", out.getvalue())
        connects = [c for c in self.twin.cli_calls() if c["args"][:2] == ["workspace", "connect"]]
        self.assertGreater(len(connects), 1)  # found again

    def test_ctrl_c_while_streaming_leaves_the_run_going(self):
        run = self.submit()
        self.twin.advance(run.id, status="Running", log="working\n")
        main = threading.get_ident()

        def interrupt():
            time.sleep(0.3)
            signal.pthread_kill(main, signal.SIGINT)
        threading.Thread(target=interrupt, daemon=True).start()
        with contextlib.redirect_stdout(io.StringIO()), \
                self.assertRaises(ExperimentExecutionException) as e:
            run.wait_for_completion(show_output=True)
        self.assertIn("the run is still executing", str(e.exception))
        self.assertFalse(self.twin.jobs[run.id].get("cancel_requested"))
        run.cancel()
        self.assertTrue(self.twin.jobs[run.id].get("cancel_requested"))


class RunTest(CoreTestCase):
    def test_metrics_tags_and_files(self):
        run = self.submit()
        run.tag("stage", "tuning")
        self.assertEqual(run.get_tags()["stage"], "tuning")
        run.log("loss", 0.5)
        run.log("loss", 0.25)
        self.assertEqual(run.get_metrics()["loss"], [0.5, 0.25])
        run.add_properties({"best": "epoch-3"})
        # get_details reads them over the REST API, as another program would.
        self.assertEqual(Run(run.experiment, run.id).get_details()["properties"],
                         {"best": "epoch-3"})
        self.twin.runs[run.id].files["outputs/model.txt"] = b"weights"
        self.assertEqual(run.get_file_names(), ["outputs/model.txt"])
        dest = os.path.join(self.tmp, "dl")
        run.download_files(prefix="outputs", output_directory=dest)
        with open(os.path.join(dest, "outputs", "model.txt"), "rb") as f:
            self.assertEqual(f.read(), b"weights")
        with self.assertRaisesRegex(UserErrorException, "has no file"):
            run.download_file("outputs/missing.txt", dest)
        self.assertEqual(sorted(os.listdir(dest)), ["outputs"])  # no partial file left
        self.twin.runs[run.id].files["outputs/../../escape.txt"] = b"x"
        with self.assertRaisesRegex(UserErrorException, "would land outside"):
            run.download_files(prefix="outputs", output_directory=dest)
        runs = list(Experiment(self.ws, "exp").get_runs())
        self.assertEqual([r.id for r in runs], [run.id])


if __name__ == "__main__":
    unittest.main()


class CompatibilityPackageTest(unittest.TestCase):
    def test_the_azureml_tree_is_trainyard_core(self):
        compat = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "..", "python-compat")
        sys.path.insert(0, os.path.abspath(compat))
        try:
            import azureml.core
            import azureml.core.compute
            import azureml.core.compute_target
            import azureml.core.conda_dependencies
            import azureml.core.runconfig
            import azureml.exceptions
            import trainyard.core
            self.assertIs(azureml.core.Workspace, trainyard.core.Workspace)
            self.assertIs(azureml.core.compute.AmlCompute, trainyard.core.AmlCompute)
            self.assertIs(azureml.core.compute_target.ComputeTargetException,
                          trainyard.core.ComputeTargetException)
            self.assertIs(azureml.core.conda_dependencies.CondaDependencies, CondaDependencies)
            self.assertIs(azureml.core.runconfig.PyTorchConfiguration, PyTorchConfiguration)
            self.assertIs(azureml.exceptions.ActivityFailedException, ActivityFailedException)
            for name in trainyard.core.__all__:
                self.assertIs(getattr(azureml.core, name), getattr(trainyard.core, name))
        finally:
            sys.path.remove(os.path.abspath(compat))
