"""trainyard.core's Dataset and Model against the real daemon (the `trainyard` binary in
$TRAINYARD_CLI): a local folder registered as a dataset (versions), a run that reads it through
as_named_input().as_download() on a process compute, the run's output registered as a model
(run.register_model), a local file registered with Model.register, and Model.download checked
against what was written.
"""

import os
import subprocess
import tempfile
import unittest

from ._workspace import end_workspace

REQUIRE = os.environ.get("TRAINYARD_REQUIRE_SERVICES") == "1"

SCRIPT = """import os, sys
src = sys.argv[sys.argv.index('--data') + 1]
os.makedirs('outputs/model', exist_ok=True)
with open(os.path.join(src, 'digits.csv')) as f, open('outputs/model/weights.txt', 'w') as out:
    out.write('trained on ' + f.read())
"""


class AssetSdkTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cli = os.environ.get("TRAINYARD_CLI", "")
        if not cli or not os.access(cli, os.X_OK):
            if REQUIRE:
                raise AssertionError("TRAINYARD_CLI does not name the trainyard binary")
            raise unittest.SkipTest("TRAINYARD_CLI does not name the trainyard binary")
        cls.tmp = tempfile.mkdtemp(prefix="ty-sdk-assets-")
        cls.old_home = os.environ.get("TRAINYARD_HOME")
        os.environ["TRAINYARD_HOME"] = os.path.join(cls.tmp, "ws")
        from trainyard.core import Workspace
        cls.ws = Workspace.from_config(cls.tmp)
        subprocess.run([cli, "compute", "create", "--name", "host", "--type", "process",
                        "--max-nodes", "1"], cwd=cls.tmp, check=True, timeout=120,
                       stdout=subprocess.DEVNULL)
        cls.data = os.path.join(cls.tmp, "data")
        os.makedirs(cls.data)
        with open(os.path.join(cls.data, "digits.csv"), "w") as f:
            f.write("0,1,2\n")

    @classmethod
    def tearDownClass(cls):
        end_workspace(cls.tmp, cls.old_home)

    def test_dataset_run_model_round_trip(self):
        from trainyard.core import (Dataset, Environment, Experiment, Model, ScriptRunConfig,
                                    UserErrorException)
        ds = Dataset.File.from_files(path=self.data).register(self.ws, "digits-data")
        self.assertEqual((ds.name, ds.version), ("digits-data", "1"))
        with self.assertRaises(UserErrorException) as ctx:
            Dataset.File.from_files(path=self.data).register(self.ws, "digits-data")
        self.assertIn("create_new_version=True", str(ctx.exception))
        ds2 = Dataset.File.from_files(path=self.data).register(self.ws, "digits-data",
                                                                create_new_version=True)
        self.assertEqual(ds2.version, "2")
        self.assertEqual(Dataset.get_by_name(self.ws, "digits-data").version, "2")
        self.assertEqual(Dataset.get_by_name(self.ws, "digits-data", version=1).version, "1")

        src = os.path.join(self.tmp, "src")
        os.makedirs(src, exist_ok=True)
        with open(os.path.join(src, "main.py"), "w") as f:
            f.write(SCRIPT)
        env = Environment("py")
        env.docker.base_image = "python:3.11-slim"
        env.python.user_managed_dependencies = True
        config = ScriptRunConfig(
            source_directory=src, script="main.py", compute_target="host", environment=env,
            arguments=["--data", Dataset.get_by_name(self.ws, "digits-data")
                       .as_named_input("digits").as_download()])
        run = Experiment(self.ws, "assets").submit(config)
        run.wait_for_completion()
        self.assertEqual(run.get_status(), "Completed")

        model = run.register_model(model_name="sdk-model", model_path="outputs/model",
                                   tags={"stage": "dev"})
        self.assertEqual((model.name, model.version, model.run_id), ("sdk-model", 1, run.id))
        self.assertEqual(model.tags, {"stage": "dev"})
        weights = os.path.join(self.tmp, "weights.bin")
        with open(weights, "wb") as f:
            f.write(b"\x00\x01binary")
        second = Model.register(self.ws, model_path=weights, model_name="sdk-model",
                                description="a file")
        self.assertEqual(second.version, 2)
        self.assertEqual([m.version for m in Model.list(self.ws, name="sdk-model")], [2, 1])

        target = os.path.join(self.tmp, "dl")
        path = Model(self.ws, "sdk-model", version=1).download(target_dir=target)
        self.assertEqual(path, os.path.join(target, "model"))
        with open(os.path.join(path, "weights.txt")) as f:
            self.assertEqual(f.read(), "trained on 0,1,2\n")
        path = Model(self.ws, "sdk-model").download(target_dir=target)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"\x00\x01binary")
        with self.assertRaises(UserErrorException):
            Model(self.ws, "sdk-model").download(target_dir=target)  # exists: exist_ok=False


if __name__ == "__main__":
    unittest.main()
