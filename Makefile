# Everything installs into .venv on first use; stamps make a second call reinstall nothing.
#   make demo   - set up, then run the main job on the embedded default (no downloads)
#   make test   - set up, then run the test suite
#   make test-fast - the inner loop: the suite without the slow and the guide tests (pytest markers)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
TORCH_PKGS := torch==2.14.1 torchvision==0.29.1

# CUDA kernels are compiled where they can run: when torch sees a GPU and a CUDA toolkit is found.
# FORCE_CUDA=1 compiles them without a GPU too (CI does, so that a CUDA compile error fails it);
# without a GPU to detect, for one architecture (sm_90) to keep that build short.
CUDA_HOME ?= $(firstword $(wildcard /usr/local/cuda-13.0 /usr/local/cuda))
ifneq ($(CUDA_HOME),)
export CUDA_HOME
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

test: $(VENV)/.test-stamp
	$(PY) -m pytest -q --durations=15 tests

test-fast: $(VENV)/.test-stamp
	$(PY) -m pytest -q --durations=10 -m "not slow and not docs" tests

install: $(VENV)/.test-stamp

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch's CUDA build (5.5 GB) installs with uv: 19 s where pip takes about 40 (uv unpacks in parallel),
# from the same indexes as pip (this machine's pip configuration), best version across them as pip
# picks; pip is the fallback. Byte-compiled at install (7 s): where PYTHONDONTWRITEBYTECODE is set,
# uncompiled modules would be compiled again by every process (4 s more per torch import).
UV_VERSION := 0.13.9
PIP_INDEXES := $(foreach u,$(shell $(PYTHON) -m pip config get global.extra-index-url 2>/dev/null),--extra-index-url $(u)) \
	$(foreach f,$(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null),--find-links $(f))
UV_INSTALL = $(VENV)/bin/uv pip install --python $(PY) --no-cache --compile-bytecode --index-strategy unsafe-best-match $(PIP_INDEXES)

$(VENV)/.torch-stamp: | $(PY)
	($(PIP) install -q uv==$(UV_VERSION) && $(UV_INSTALL) $(TORCH_PKGS)) || $(PIP) install $(TORCH_PKGS)
	touch $@

# What the demo needs; the test suite's extras (ONNX Runtime, trackers, ...) come with `make test`.
$(VENV)/.deps-stamp: requirements.txt $(VENV)/.torch-stamp
	$(UV_INSTALL) -r requirements.txt || $(PIP) install -r requirements.txt
	touch $@

# The synthetic set (9 s on one core) is generated into its cache while the ops compile: the two
# compile jobs leave a core idle for about half of the build. The demo and the tests read it from there.
$(VENV)/.ext-stamp: setup.py pyproject.toml $(CSRC) $(VENV)/.deps-stamp
	$(PY) -m retdet.data.synthetic --cache & gen=$$!; \
	$(PIP) install --no-build-isolation --no-deps -e .; built=$$?; \
	wait $$gen && exit $$built
	touch $@

$(VENV)/.test-stamp: requirements-test.txt $(VENV)/.ext-stamp
	$(PIP) install -r requirements.txt -r requirements-test.txt
	touch $@

clean-build:
	rm -rf build retdet/_C*.so $(VENV)/.ext-stamp $(VENV)/.test-stamp
