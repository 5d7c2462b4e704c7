# Quick start: `make demo` and `make test` work on a fresh clone with only Python.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): requirements.txt setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -e .
	@touch $(STAMP)

# Train a LeNet on generated sample data, export it as a servable SavedModel, evaluate it.
demo: install
	$(PY) -m imgclf.sample_data $(DEMO_DIR)/data
	$(PY) train_model.py --train_dataset_path $(DEMO_DIR)/data/train \
		--test_dataset_path $(DEMO_DIR)/data/test --model_folder_path $(DEMO_DIR)/models \
		--model_type LenetModel --model_version 1 --input_width 32 --input_height 32 \
		--batch_size 32 --num_epochs 8 --patience 3
	$(PY) eval_model.py --test_dataset_path $(DEMO_DIR)/data/test \
		--model_path $(DEMO_DIR)/models/LenetModel/1

test: install
	$(PY) -m pytest -q -p no:cacheprovider tests

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
