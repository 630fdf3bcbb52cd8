"""Package definition for the MNIST / Fashion-MNIST TFX pipeline.

Tool settings (ruff, pytest) live in pyproject.toml; exact versions of every
package, transitive ones included, live in requirements.lock, which the set-up
installs as pip constraints.
"""

from setuptools import find_packages, setup

setup(
    name="mnist-tfx",
    version="0.1.0",
    description="TFX pipeline: raw MNIST / Fashion-MNIST files to a TF Serving model",
    python_requires=">=3.10,<3.11",
    packages=find_packages(
        include=["ingest*", "components*", "report*", "trainer*", "pipeline*", "serving*", "cli*"]
    ),
    # The evaluation report's page template; the REST API's OpenAPI description.
    package_data={"report": ["templates/*.html"], "serving": ["openapi.yaml", "ui/*.html"]},
    install_requires=[
        "tfx==1.16.0",
        "tensorflow==2.16.2",
        "tf-keras==2.16.0",
        # TFT imports dill but recent Beam releases no longer pull it in.
        "dill",
        "tensorflow-serving-api==2.16.1",
        "numpy",
        # serving/: the TF-Serving-compatible server and its client
        "aiohttp",
        "prometheus-client",
        "pillow",
        "requests",
        "orjson",
        # the server's event loop (libuv): less CPU per request than asyncio's own loop
        "uvloop",
        # the evaluation report: figures (Agg backend, no display) and its page template
        "matplotlib",
        "jinja2",
        # ML Metadata on MySQL: the one-run-per-store named lock and clear login errors
        "pymysql",
    ],
    extras_require={
        "dev": [
            "pytest",
            # make test runs the suite on every core: most tests wait on one process
            "pytest-xdist",
            "ruff",
            "pyyaml",
            "import-linter",
            # fuzzing the server: the REST API from its OpenAPI description, gRPC messages
            "schemathesis",
            "hypothesis",
            # a local S3 endpoint (moto_server) for the object-store publishing tests
            "moto[server]",
        ],
        # No Airflow extra: Airflow 3 runs in its own environment (.venv-airflow, pinned by
        # requirements-airflow.lock) and starts the pipeline's nodes in this one through
        # `mnist-tfx run-node` (docs/orchestrators.md, Airflow).
        # Compiling for Kubeflow Pipelines v2 / Vertex (pipeline/kubeflow_runner.py).
        "kfp": ["kfp>=2,<3", "kfp-pipeline-spec>=0.2.2"],
        # s3:// roots and serving base paths (serving/object_store.py): tensorflow-io
        # registers TF's S3 filesystem (0.37.1 is the release built for TF 2.16); boto3 is
        # Beam's S3 filesystem (apache-beam's `aws` extra). gs:// needs nothing more.
        "objectstore": ["tensorflow-io==0.37.1", "boto3>=1.9,<2"],
    },
    entry_points={"console_scripts": ["mnist-tfx=cli.main:console_main"]},
)
