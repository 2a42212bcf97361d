"""azureml: the cloud service's v1 SDK module tree, served by trainyard.core
(azureml-core-trainyard). Never install it beside the real azureml-core."""
