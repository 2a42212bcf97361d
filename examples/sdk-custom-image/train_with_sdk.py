"""The cloud service's how-to "Train a model using a custom Docker image", on trainyard.

The program is the how-to's, in its order, with two changes: the imports name trainyard.core
(with the optional azureml-core-trainyard package installed, `from azureml.core import ...`
runs it unchanged), and the model is the digits demo's (examples/digits-custom-image), since
the how-to's fastai image is not reachable here. Choose the environment's form with --form:

  dockerfile  the digits Dockerfile (Python + scikit-learn from Debian's packages)   [default]
  image       the base image fastdotai/fastai2:latest (a local stand-in; see README.md)
  registry    a base image in a private registry: --registry ADDRESS --image NAME, the user
              name in $REGISTRY_USER and the password in $REGISTRY_PASSWORD

    python3 examples/sdk-custom-image/train_with_sdk.py --form dockerfile
"""

import argparse
import os
import sys

try:
    from trainyard.core import Environment, Experiment, ScriptRunConfig, Workspace
    from trainyard.core.compute import AmlCompute, ComputeTarget
    from trainyard.core.compute_target import ComputeTargetException
except ImportError:  # run from a checkout without installing the SDK
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                    "sdk", "python"))
    from trainyard.core import Environment, Experiment, ScriptRunConfig, Workspace
    from trainyard.core.compute import AmlCompute, ComputeTarget
    from trainyard.core.compute_target import ComputeTargetException

here = os.path.dirname(os.path.abspath(__file__))
digits = os.path.join(here, "..", "digits-custom-image")

parser = argparse.ArgumentParser(description="the custom-image how-to on trainyard")
parser.add_argument("--form", choices=["dockerfile", "image", "registry"], default="dockerfile")
parser.add_argument("--registry", default="", help="registry address (--form registry)")
parser.add_argument("--image", default="", help="image in the registry (--form registry)")
parser.add_argument("--source", default=os.path.join(digits, "src"))
parser.add_argument("--script", default="train.py")
parser.add_argument("--cluster", default="gpu-cluster")
parser.add_argument("--epochs", type=int, default=3)
opts = parser.parse_args()

ws = Workspace.from_config()
fastai_env = Environment("fastai2")
fastai_env.docker.enabled = True
fastai_env.docker.base_image = "fastdotai/fastai2:latest"
fastai_env.python.user_managed_dependencies = True
if opts.form == "registry":
    fastai_env.docker.base_image = opts.image
    fastai_env.docker.base_image_registry.address = opts.registry
    fastai_env.docker.base_image_registry.username = os.environ.get("REGISTRY_USER", "")
    fastai_env.docker.base_image_registry.password = os.environ.get("REGISTRY_PASSWORD", "")
elif opts.form == "dockerfile":
    fastai_env.docker.base_image = None
    fastai_env.docker.base_dockerfile = os.path.join(digits, "docker-context", "Dockerfile")

cluster_name = opts.cluster
try:
    compute_target = ComputeTarget(workspace=ws, name=cluster_name)
    print('Found existing compute target.')
except ComputeTargetException:
    compute_config = AmlCompute.provisioning_configuration(vm_size='STANDARD_NC6', max_nodes=4)
    compute_target = ComputeTarget.create(ws, cluster_name, compute_config)
    compute_target.wait_for_completion(show_output=True)
print(compute_target.get_status().serialize())

src = ScriptRunConfig(source_directory=opts.source, script=opts.script,
                      arguments=["--epochs", opts.epochs])
src.run_config.environment = fastai_env
src.run_config.target = compute_target
run = Experiment(ws, 'fastai-custom-image').submit(src)
run.wait_for_completion(show_output=True)
