# The image every step of the Kubeflow Pipelines v2 / Vertex pipeline runs in
# (pipeline/kubeflow_runner.py --image): the locked TFX stack plus this package.
#
#   docker build -t REGISTRY/mnist-tfx:TAG . && docker push REGISTRY/mnist-tfx:TAG
#
# Never built by the tests: these machines cannot pull python:3.10-slim (no Docker
# Hub). tests/pipeline/test_kubeflow_runner.py checks what can be checked offline.

# Debian 12 (glibc 2.36), what TFX 1.16's native wheels need; Python 3.10, what it allows.
FROM python:3.10-slim-bookworm

# TF_USE_LEGACY_KERAS: the TFX entrypoint imports TensorFlow (through TFMA) before
# our packages, whose __init__ would select Keras 2, are imported; select it here.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_USE_LEGACY_KERAS=1 \
    TF_ENABLE_ONEDNN_OPTS=1 \
    MNIST_TFX_TF_S3=1

WORKDIR /opt/mnist-tfx

# Dependencies first, in their own layer: a code change does not reinstall 3 GB.
# Build tools come from the lock too (no build isolation), so the image is what the
# tests ran with. kfp-pipeline-spec: the entrypoint
# (python -m tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor) and the
# ExampleGen driver import kfp.pipeline_spec; neither imports kfp itself, so the
# kfp client and Airflow stay out. tensorflow-io and boto3 (the `objectstore` extra,
# named here so the bare `.` stays the package): TF's s3:// filesystem, so every step
# can read and write an S3 or MinIO pipeline root, data root and serving base path
# (serving/object_store.py), and Beam's S3 filesystem; gs:// is TF's and Beam's own.
COPY requirements.lock constraints.txt setup.py pyproject.toml ./
RUN pip install "pip==24.2" \
    && pip install -c requirements.lock setuptools wheel \
    && pip install --no-build-isolation -c requirements.lock . kfp-pipeline-spec tensorflow-io boto3 \
    && pip uninstall -y mnist-tfx

# The code: every package a step imports by module path (executors, the report's
# artifact type, trainer's preprocessing_fn and run_fn).
COPY ingest/ ingest/
COPY components/ components/
COPY report/ report/
COPY pipeline/ pipeline/
COPY trainer/ trainer/
COPY serving/ serving/
COPY cli/ cli/
# The .pth line: every Python process that imports TensorFlow registers TF's s3://
# first (serving/s3_startup.py), since TFX's own steps open the pipeline root before
# any module of ours runs. MNIST_TFX_TF_S3=0 turns it off.
RUN pip install --no-deps --no-build-isolation -c requirements.lock . \
    && echo "import serving.s3_startup" \
       > "$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/mnist_tfx_s3.pth" \
    && python -c "import sys, tensorflow; assert 'tensorflow_io' in sys.modules, 'no s3 hook'" \
    && python -c "import tensorflow_io, components.example_gen.executor, components.pusher.executor, components.data_validator.executor, components.evaluation_report.executor, trainer.task, tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"

# No ENTRYPOINT: KubeflowV2DagRunner gives each step its command.
