"""Training of the registered networks on ImageNet through tensorflow-datasets."""
