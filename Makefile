# The two commands a new user needs are `make run` and `make test`; every
# target sets up what it needs first and skips what is already done.

SHELL := /bin/bash
DATASET ?= mnist
ARGS ?=
VENV := .venv
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/mnist-tfx
# TFX 1.16 requires Python < 3.11. Each candidate is run to check it: a pyenv shim
# can be on PATH and still fail when 3.10 is not the selected pyenv version.
PYTHON310 ?= $(shell for p in $$(ls -d $$HOME/.pyenv/versions/3.10*/bin/python3.10 2>/dev/null) \
	$$(command -v python3.10 2>/dev/null) /usr/bin/python3.10 /usr/local/bin/python3.10; do \
	if "$$p" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then \
	echo "$$p"; break; fi; done)
STAMP := $(VENV)/.installed
# Airflow 3 lives in its own environment (docs/orchestrators.md, Airflow): TFX 1.16 caps
# Airflow below 3. Airflow 3.1 takes Python 3.10-3.13; 3.11 is Debian 12's own python3, so
# no pyenv build is needed for it. Found like 3.10.
AIRFLOW_VENV := .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed
PYTHON311 ?= $(shell for p in $$(ls -d $$HOME/.pyenv/versions/3.11*/bin/python3.11 2>/dev/null) \
	$$(command -v python3.11 2>/dev/null) /usr/bin/python3.11 /usr/local/bin/python3.11; do \
	if "$$p" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null; then \
	echo "$$p"; break; fi; done)

.PHONY: setup browser h2load run test test-fast reproduce bench bench-beam bench-serving lint format lock kubeflow airflow clean-output
.PHONY: airflow-setup lock-airflow

setup: $(STAMP)

$(STAMP): requirements.lock setup.py
	@if [ -z "$(PYTHON310)" ]; then echo "error: python3.10 not found (TFX 1.16 needs Python 3.10); install it or pass PYTHON310=/path/to/python3.10" >&2; exit 1; fi
	@if [ ! -x $(PY) ]; then echo "creating $(VENV) with $(PYTHON310)"; $(PYTHON310) -m venv $(VENV); fi
	$(PY) -m pip install --quiet --disable-pip-version-check "pip==24.2"
	$(PY) -m pip install --quiet --disable-pip-version-check -c requirements.lock -e ".[dev,kfp,objectstore]"
	@touch $(STAMP)

## make airflow-setup: Airflow 3 in .venv-airflow (Python 3.11), pinned by requirements-airflow.lock.
## The project's .venv is untouched: the DAG's tasks run `mnist-tfx run-node` there.
airflow-setup: $(AIRFLOW_STAMP)

# Debian 12's python3.11 may lack venv (python3.11-venv): installed from Debian then,
# as root or through sudo, unless PYTHON311 was given on the command line.
$(AIRFLOW_STAMP): requirements-airflow.lock
	@p="$(PYTHON311)"; \
	if [ -z "$$p" ] || ! "$$p" -c 'import ensurepip' 2>/dev/null; then \
	  if [ "$(origin PYTHON311)" = "command line" ]; then echo "error: python3.11 not found (Airflow 3 runs in its own environment, .venv-airflow, on Python 3.11); install it or pass PYTHON311=/path/to/python3.11" >&2; exit 1; fi; \
	  echo "installing Debian's python3.11 and python3.11-venv for $(AIRFLOW_VENV)"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq python3.11 python3.11-venv; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq python3.11 python3.11-venv; fi \
	  || { echo "error: python3.11 with venv not found and apt-get could not install python3.11-venv (Airflow 3 runs in its own environment, .venv-airflow, on Python 3.11); install it or pass PYTHON311=/path/to/python3.11" >&2; exit 1; }; \
	  p=/usr/bin/python3.11; fi; \
	if [ ! -x $(AIRFLOW_VENV)/bin/python ]; then echo "creating $(AIRFLOW_VENV) with $$p"; "$$p" -m venv $(AIRFLOW_VENV); fi
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet --disable-pip-version-check "pip==24.2"
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-airflow.lock
	@touch $(AIRFLOW_STAMP)

## make run: set up, fetch MNIST, convert it, run the whole pipeline, print the summary.
run: setup
	$(CLI) run --dataset $(DATASET) $(ARGS)

## make browser: Debian's Chromium, which the evaluation report's browser test renders with.
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium; fi; fi

## make h2load: nghttp2's h2load (Debian's nghttp2-client, installed if missing), the C HTTP/2
## load generator that bench-serving measures gRPC with, also run by a test against the test server.
h2load:
	@if ! command -v h2load >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq nghttp2-client; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq nghttp2-client; fi; fi

## make browser-js: Node (Debian's nodejs and npm, installed if missing) and playwright-core,
## pinned by tests/browser/package-lock.json, for the draw-a-digit page's browser test
## (tests/serving/test_ui_browser.py). npm ci runs only when node_modules is missing or older
## than the lock.
BROWSER_JS := tests/browser/node_modules/.package-lock.json
.PHONY: browser-js
browser-js: $(BROWSER_JS)

$(BROWSER_JS): tests/browser/package.json tests/browser/package-lock.json
	@if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq nodejs npm; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq nodejs npm; fi; fi
	npm ci --prefix tests/browser --no-audit --no-fund
	@touch $@

## make test: set up, lint (style and the package layering), then the whole suite
## (unit + end-to-end on the committed fixture), one pytest worker per core (pytest-xdist;
## a test file stays on one worker, so its module fixtures are built once). Most tests wait
## on one process at a time, so two workers on two cores take about half the time.
## TEST_WORKERS=0 runs in this process; the slowest tests are listed at the end.
TEST_WORKERS ?= auto
PYTEST_PAR := -n $(TEST_WORKERS) --dist loadfile --durations=25
test: setup airflow-setup browser browser-js h2load lint
	$(PY) -m pytest tests $(PYTEST_PAR) $(ARGS)

test-fast: setup
	$(PY) -m pytest tests -m "not e2e" $(PYTEST_PAR) $(ARGS)

## make fuzz: the server's fuzz tests (tests/serving/test_fuzz.py: REST from serving/openapi.yaml
## with schemathesis, hostile REST bodies, random gRPC messages) with FUZZ_EXAMPLES examples per
## operation and generator, random seeds; prints the counts. `make test` runs them briefly.
FUZZ_EXAMPLES ?= 2000
.PHONY: fuzz
fuzz: setup
	MNIST_TFX_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest tests/serving/test_fuzz.py $(ARGS)

## make reproduce: every tutorial model on both datasets through the pipeline; writes the table.
reproduce: setup
	$(CLI) reproduce $(ARGS)

## make bench: full-data pipeline timings from ML Metadata and Trainer vs bare fit throughput.
bench: setup
	$(PY) bench/bench_pipeline.py --dataset $(DATASET) $(ARGS)

## make bench-epochs: the default epoch count chosen on the validation split (test set unread).
.PHONY: bench-epochs
bench-epochs: setup
	$(PY) bench/choose_epochs.py --dataset $(DATASET) $(ARGS)

## make bench-beam: the full-data pipeline under Beam's direct, direct-mp and portable runners (the
## last with a job service and an EXTERNAL worker pool it starts and stops), per component.
bench-beam: setup
	$(PY) bench/bench_beam_runners.py --dataset $(DATASET) $(ARGS)

## make bench-serving: serving latency/throughput (REST, gRPC, batching on/off) next to a direct call.
bench-serving: setup h2load
	$(PY) bench/bench_serving.py --base-path tfx_output/serving/$(DATASET) --model-name $(DATASET) $(ARGS)

## make bench-mnist-client: TF Serving's MNIST example client (gRPC predict_images) over the
## 10,000 MNIST test images against the pushed model; prints its error rate next to the model's own.
.PHONY: bench-mnist-client
bench-mnist-client: setup
	$(PY) bench/mnist_example_client.py --base-path tfx_output/serving/mnist --model-name mnist $(ARGS)

## make kubeflow IMAGE=REGISTRY/mnist-tfx:TAG PIPELINE_ROOT=gs://... DATA_ROOT=gs://... SERVING_MODEL_DIR=gs://...:
## compile for Kubeflow Pipelines v2 / Vertex into tfx_output/kubeflow/<pipeline>.yaml.
kubeflow: setup
	$(if $(and $(IMAGE),$(PIPELINE_ROOT),$(DATA_ROOT),$(SERVING_MODEL_DIR)),,$(error make kubeflow \
		needs IMAGE=, PIPELINE_ROOT=, DATA_ROOT= and SERVING_MODEL_DIR= (docs/orchestrators.md, Kubeflow)))
	$(PY) -m pipeline.kubeflow_runner --image "$(IMAGE)" --pipeline-root "$(PIPELINE_ROOT)" \
		--data-root "$(DATA_ROOT)" --serving-model-dir "$(SERVING_MODEL_DIR)" --dataset $(DATASET) $(ARGS)

## make airflow: convert the data, then Airflow 3 standalone (API server and UI on
## localhost:8080, scheduler, DAG processor, triggerer; SQLite; state in .airflow/) from
## .venv-airflow with dags/mnist_tfx_airflow.py; each task runs one pipeline node in .venv.
## Every user is admin (simple auth manager, localhost only). docs/orchestrators.md, Airflow.
airflow: setup airflow-setup
	$(CLI) convert --dataset $(DATASET)
	PATH=$(CURDIR)/$(AIRFLOW_VENV)/bin:$$PATH \
	AIRFLOW_HOME=$(CURDIR)/.airflow \
	AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__CORE__LOAD_EXAMPLES=False \
	AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True \
	AIRFLOW__API__HOST=127.0.0.1 \
	AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT=300 \
	AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT=600 \
	MNIST_TFX_PROJECT_VENV=$(CURDIR)/$(VENV) \
	MNIST_TFX_DATASET=$(DATASET) \
	$(AIRFLOW_VENV)/bin/airflow standalone

## make lint: ruff (style) and lint-imports (the layering contracts in pyproject.toml).
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

## make lock: re-resolve requirements.lock from setup.py (needs PyPI). uv resolves the
## TFX stack in about 30 s; pip's resolver backtracks over google-cloud-* for many minutes.
lock:
	rm -rf /tmp/mnist-tfx-lock && $(PYTHON310) -m venv /tmp/mnist-tfx-lock
	/tmp/mnist-tfx-lock/bin/pip install --quiet uv
	/tmp/mnist-tfx-lock/bin/uv pip compile setup.py --extra dev --extra kfp --extra objectstore \
		-c constraints.txt --python-version 3.10 \
		--python-platform x86_64-manylinux_2_36 --no-header --no-annotate -o requirements.lock

## make lock-airflow: re-resolve requirements-airflow.lock from requirements-airflow.in for
## .venv-airflow (Python 3.11), with uv as `make lock` does.
lock-airflow:
	@if [ -z "$(PYTHON311)" ]; then echo "error: python3.11 not found; pass PYTHON311=/path/to/python3.11" >&2; exit 1; fi
	rm -rf /tmp/mnist-tfx-lock-airflow && $(PYTHON311) -m venv /tmp/mnist-tfx-lock-airflow
	/tmp/mnist-tfx-lock-airflow/bin/pip install --quiet uv
	/tmp/mnist-tfx-lock-airflow/bin/uv pip compile requirements-airflow.in --python-version 3.11 \
		--python-platform x86_64-manylinux_2_36 --no-header --no-annotate -o requirements-airflow.lock

clean-output:
	rm -rf tfx_output serving_model
