# onnx-stopgrad: every set-up step a fresh clone needs lives here.
#   make demo   set up, then fine-tune a pretrained model behind a StopGradient
#   make test   set up, then run the whole test suite (both ONNX Runtimes)
#   make lint   ruff check, ruff format --check and mypy on the package
PYTHON      ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
# onnxruntime-gpu cannot share a venv with the training runtime: it gets its own.
INFER_VENV  := .venv-ort131
INFER_PY    := $(INFER_VENV)/bin/python
ORT_INFERENCE := onnxruntime-gpu==1.31.*
OP_SOURCES  := $(shell find custom_ops -type f -not -path '*/build/*' 2>/dev/null)

.PHONY: setup graphviz build demo test test-fast lint bench clean

setup: $(VENV)/.installed $(INFER_VENV)/.installed graphviz

# `onnx-stopgrad show` renders with Graphviz's `dot` (Debian package graphviz).
graphviz:
	@command -v dot >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -qq graphviz >/dev/null 2>&1 || \
	     (apt-get update -qq && apt-get install -y -qq graphviz >/dev/null)); \
	  else echo "note: install Graphviz (apt-get install graphviz) for 'onnx-stopgrad show' to write SVG/PNG"; fi; }

$(VENV)/.installed: pyproject.toml setup.py $(OP_SOURCES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[training,dev]'
	touch $@

$(INFER_VENV)/.installed: pyproject.toml
	test -x $(INFER_PY) || $(PYTHON) -m venv $(INFER_VENV)
	$(INFER_PY) -m pip install --quiet --upgrade pip
	$(INFER_PY) -m pip install --quiet '$(ORT_INFERENCE)' onnx onnx-ir onnx-graphsurgeon numpy click pytest psutil
	touch $@

# Rebuild the op library in place (pip does this too on install).
build: $(VENV)/.installed
	$(PY) setup.py build_ext --inplace

demo: setup
	$(PY) examples/finetune_digits.py

# The whole suite in the training runtime, then the op and rewrite tests in the inference
# runtime (the in-tree package, with the library built above, on PYTHONPATH).
test: setup
	ONNX_STOPGRAD_LARGE_TESTS=1 $(PY) -m pytest -q tests
	PYTHONPATH=$(CURDIR) $(INFER_PY) -m pytest -q tests/op tests/rewrite tests/reliability/test_rel_oplib.py

test-fast: setup
	$(PY) -m pytest -q -x tests

# Quality gates: lint, formatting, and types of the package (not yet part of `test`).
lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy onnx_stopgrad

bench: setup
	$(PY) benchmarks/run_all.py

clean:
	rm -rf build $(VENV) $(INFER_VENV) onnx_stopgrad/_lib *.egg-info
