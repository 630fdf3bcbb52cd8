"""TensorFlow's ``s3://`` filesystem in every process that imports TensorFlow, for
the pipeline's container image, where TFX's own steps touch ``s3://`` paths.

``serving/object_store.py`` registers the filesystem (tensorflow-io) when our code
first meets an ``s3://`` URL. TFX's own steps never get there first: ExampleGen's
driver, StatisticsGen or the Evaluator open a pipeline root or data root on S3
through ``tf.io.gfile`` before any module of ours runs, and TensorFlow alone has no
``s3://`` ("File system scheme 's3' not implemented"). So the image (``Dockerfile``)
has a ``.pth`` file in site-packages with the single line ``STARTUP_LINE``, which
Python runs at every interpreter start; with ``MNIST_TFX_TF_S3=1`` (the image's
default) it puts a finder first on ``sys.meta_path`` that, once ``tensorflow`` has
finished importing, calls ``object_store.register_s3`` (plugin, SDK timeouts, the
exit guard against tensorflow-io's abort at exit). Processes that never import
TensorFlow (pip, the shell's tools) pay for two small imports only.

Beam's own S3 filesystem (boto3; Beam lists and matches files through it) is a
different client: it ignores ``S3_ENDPOINT`` and takes ``--s3_endpoint_url`` as a
Beam argument (docs/orchestrators.md).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys

ENV = "MNIST_TFX_TF_S3"
STARTUP_LINE = "import serving.s3_startup"


class _AfterTensorFlow(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` through the other finders and wraps its loader so that the
    filesystem is registered right after the package has been executed."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once; and so that find_spec below skips this finder
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module) -> None:
            exec_module(module)
            from serving import object_store

            object_store.register_s3()

        spec.loader.exec_module = exec_then_register
        return spec


def install(environ=os.environ) -> bool:
    """Arm the hook when ``MNIST_TFX_TF_S3=1``; True if armed. When TensorFlow is
    already imported, register at once."""
    if environ.get(ENV) != "1":
        return False
    if "tensorflow" in sys.modules:
        from serving import object_store

        object_store.register_s3()
    elif not any(isinstance(f, _AfterTensorFlow) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterTensorFlow())
    return True


install()
