# onnx-stopgrad: every set-up step a fresh clone needs lives here.
#   make demo   set up, then fine-tune a pretrained model behind a StopGradient
#   make test   set up, then the quality gates and the whole test suite (both ONNX Runtimes)
#   make dist   the sdist and a manylinux_2_28 wheel in dist/
#   make lint   ruff check, ruff format --check and mypy on the package
PYTHON      ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
# onnxruntime-gpu cannot share a venv with the training runtime: it gets its own.
INFER_VENV  := .venv-ort131
INFER_PY    := $(INFER_VENV)/bin/python
ORT_INFERENCE := onnxruntime-gpu==1.31.*
OP_SOURCES  := $(shell find custom_ops -type f -not -path '*/build/*' 2>/dev/null)
ARCH        := $(shell uname -m)
# The wheel's platform: zig compiles the library against glibc 2.28, auditwheel checks and tags it.
MANYLINUX   := manylinux_2_28_$(ARCH)
ZIG_TARGET  := $(ARCH)-linux-gnu.2.28

.PHONY: setup graphviz build demo test test-fast lint bench dist clean

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
test: setup lint
	ONNX_STOPGRAD_LARGE_TESTS=1 $(PY) -m pytest -q tests
	PYTHONPATH=$(CURDIR) $(INFER_PY) -m pytest -q tests/op tests/rewrite tests/reliability/test_rel_oplib.py

# Without the large tests and the packaging ones (they build and install the wheel and sdist).
test-fast: setup
	$(PY) -m pytest -q -x -m "not packaging" tests

# Quality gates (part of `test`): lint and formatting of the tree, types of the package.
lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy onnx_stopgrad

bench: setup
	$(PY) benchmarks/run_all.py

# The sdist (with ONNX Runtime's headers and licence bundled), then the wheel built from
# it offline (bundled headers only) by zig for glibc 2.28, checked and tagged by auditwheel:
# dist/onnx_stopgrad-<v>.tar.gz and dist/onnx_stopgrad-<v>-py3-none-...manylinux_2_28_<arch>.whl.
dist: $(VENV)/.installed
	rm -rf dist
	$(PY) -m build --sdist --outdir dist .
	ONNX_STOPGRAD_ZIG="$$($(PY) -c 'import os, ziglang; print(os.path.join(os.path.dirname(ziglang.__file__), "zig"))')" \
	  ONNX_STOPGRAD_ZIG_TARGET=$(ZIG_TARGET) ONNX_STOPGRAD_HEADER_SOURCES=bundled \
	  $(PY) -m pip wheel --quiet --no-deps --no-cache-dir -w dist/raw dist/onnx_stopgrad-*.tar.gz
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m auditwheel repair --plat $(MANYLINUX) -w dist dist/raw/*.whl
	rm -rf dist/raw
	ls -l dist

clean:
	rm -rf build dist $(VENV) $(INFER_VENV) onnx_stopgrad/_lib/*.so custom_ops/third_party *.egg-info
