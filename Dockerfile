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
    TF_ENABLE_ONEDNN_OPTS=1

WORKDIR /opt/mnist-tfx

# Dependencies first, in their own layer: a code change does not reinstall 3 GB.
# Build tools come from the lock too (no build isolation), so the image is what the
# tests ran with. kfp-pipeline-spec: the entrypoint
# (python -m tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor) and the
# ExampleGen driver import kfp.pipeline_spec; neither imports kfp itself, so the
# kfp client and Airflow stay out. tensorflow-io (the `objectstore` extra, named here
# so the bare `.` stays the package): TF's s3:// filesystem, so the Pusher can publish
# to an S3 or MinIO serving base path (serving/object_store.py); gs:// is TF's own.
COPY requirements.lock constraints.txt setup.py pyproject.toml ./
RUN pip install "pip==24.2" \
    && pip install -c requirements.lock setuptools wheel \
    && pip install --no-build-isolation -c requirements.lock . kfp-pipeline-spec tensorflow-io \
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
RUN pip install --no-deps --no-build-isolation -c requirements.lock . \
    && python -c "import tensorflow_io, components.example_gen.executor, components.pusher.executor, components.data_validator.executor, components.evaluation_report.executor, trainer.task, tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"

# No ENTRYPOINT: KubeflowV2DagRunner gives each step its command.
