# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test test-numerics demo lint bench bench-gpu clean

setup: $(STAMP)

# torch is pinned and installed first: an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

test: setup
	WANDB_MODE=offline $(BIN)/python -m pytest -q

# Tests comparing code paths (compiled/eager, bf16/fp32, DDP, ...) with AVX2 kernels, as on a CPU
# without AVX-512; `.ci/run` runs it after `make test`.
test-numerics: setup
	WANDB_MODE=offline ATEN_CPU_CAPABILITY=avx2 $(BIN)/python -m pytest -q -m numerics

demo: setup
	$(BIN)/clsvit demo

lint: setup
	$(BIN)/ruff check clsvit_lightning tests experiments
	$(BIN)/ruff format --check clsvit_lightning tests experiments

bench: setup
	$(BIN)/python experiments/benchmarks/backbone.py

# DINOv2 steps on one GPU (bf16, eager/compiled, vanilla/paper, DDP/FSDP); without CUDA it says so.
bench-gpu: setup
	$(BIN)/python experiments/benchmarks/gpu.py

clean:
	rm -rf $(VENV) .pytest_cache
