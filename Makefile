# Everything installs into .venv on first use; stamps make a second call reinstall nothing.
#   make demo   - set up, then run the main job on the embedded default (no downloads)
#   make test   - set up, then run the test suite
#   make test-fast - the inner loop: the suite without the slow and the guide tests (pytest markers)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
TORCH_PKGS := torch==2.14.1 torchvision==0.29.1

# CUDA kernels are compiled whenever a CUDA toolkit is found (a GPU is not needed to compile).
CUDA_HOME ?= $(firstword $(wildcard /usr/local/cuda-13.0 /usr/local/cuda))
ifneq ($(CUDA_HOME),)
export CUDA_HOME
export FORCE_CUDA ?= 1
# Without a GPU to detect, compile for one architecture (sm_90) to keep the build short.
ifeq ($(shell command -v nvidia-smi >/dev/null 2>&1 && echo gpu),)
export TORCH_CUDA_ARCH_LIST ?= 9.0
endif
endif
export MAX_JOBS ?= 2

CSRC := $(shell find csrc -type f 2>/dev/null)

.PHONY: demo test test-fast install clean-build

# The main job: train configs/quickstart.py from scratch on the embedded synthetic set, then evaluate.
demo: $(VENV)/.ext-stamp
	$(PY) tools/train_net.py --config configs/quickstart.py

test: $(VENV)/.ext-stamp
	$(PY) -m pytest -q --durations=15 tests

test-fast: $(VENV)/.ext-stamp
	$(PY) -m pytest -q --durations=10 -m "not slow and not docs" tests

install: $(VENV)/.ext-stamp

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch-stamp: | $(PY)
	$(PIP) install $(TORCH_PKGS)
	touch $@

$(VENV)/.deps-stamp: requirements.txt requirements-test.txt $(VENV)/.torch-stamp
	$(PIP) install -r requirements.txt -r requirements-test.txt
	touch $@

$(VENV)/.ext-stamp: setup.py pyproject.toml $(CSRC) $(VENV)/.deps-stamp
	$(PIP) install --no-build-isolation --no-deps -e .
	touch $@

clean-build:
	rm -rf build retdet/_C*.so $(VENV)/.ext-stamp
