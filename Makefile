# Quick start: `make demo` and `make test` work on a fresh clone with only Python.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo
# The demo server's ports: TF Serving's defaults, override if they are taken.
GRPC_PORT ?= 8500
REST_PORT ?= 8501

.PHONY: install demo test bench audit clean

install: $(STAMP)

$(STAMP): requirements.txt setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -e .
	@touch $(STAMP)

# Train a LeNet on generated sample data, export it as a servable SavedModel, evaluate it,
# then serve it with imgclf's server and evaluate it over REST and gRPC.
demo: install
	$(PY) -m imgclf.data.sample_data $(DEMO_DIR)/data
	$(PY) train_model.py --train_dataset_path $(DEMO_DIR)/data/train \
		--test_dataset_path $(DEMO_DIR)/data/test --model_folder_path $(DEMO_DIR)/models \
		--model_type LenetModel --model_version 1 --overwrite --input_width 32 --input_height 32 \
		--batch_size 32 --num_epochs 8 --patience 3
	$(PY) eval_model.py --test_dataset_path $(DEMO_DIR)/data/test \
		--model_path $(DEMO_DIR)/models/LenetModel/1
	@echo "Serving the demo model with imgclf's server (gRPC :$(GRPC_PORT), REST :$(REST_PORT)) and evaluating it over both protocols"
	@rm -f $(DEMO_DIR)/server.json; \
	$(PY) -m imgclf.serving --model_name LenetModel --model_base_path $(DEMO_DIR)/models/LenetModel \
		--port $(GRPC_PORT) --rest_api_port $(REST_PORT) --enable_batching \
		--ready_file $(DEMO_DIR)/server.json & server=$$!; \
	trap 'kill $$server 2>/dev/null; wait $$server' EXIT; \
	for i in $$(seq 240); do \
		test -f $(DEMO_DIR)/server.json && break; \
		kill -0 $$server 2>/dev/null || { echo "the server did not start" >&2; exit 1; }; \
		sleep 0.5; \
	done; \
	$(PY) eval_model_serving.py --test_dataset_path $(DEMO_DIR)/data/test --model_name LenetModel \
		--input_width 32 --input_height 32 --protocol both --signature both --concurrency 8 \
		--host 127.0.0.1 --grpc_port $(GRPC_PORT) --rest_port $(REST_PORT)

# The serving benchmark (needs wrk: apt-get install wrk); appends its results to bench/RESULTS.md.
bench: install
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) bench/serving_bench.py --duration 15 --warmup 5 --connections 32 --rounds 3

# Known vulnerabilities (PyPI's advisory data) in the exact versions `make install` resolved
# requirements.txt to; needs pypi.org's JSON API. --strict: a package that cannot be checked fails
# the audit instead of passing silently. How to read it: docs/security.md.
audit: install
	@$(PY) -m pip freeze --exclude-editable > $(VENV)/audit-requirements.txt
	$(PY) -m pip_audit --strict --progress-spinner off --desc on --no-deps --disable-pip \
		-r $(VENV)/audit-requirements.txt

# Four test processes on two cores (pytest-xdist): many tests spend much of their time waiting on
# servers and training processes of their own. Each module runs in one process; how the work is
# shared out: tests/conftest.py. TEST_WORKERS=0 runs everything in this process.
TEST_WORKERS ?= 4
test: install
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile tests

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
