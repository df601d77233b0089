# Every target installs what it needs into .venv on first use.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# torch is pinned here; the package itself only asks for a range. A CPU-only build from the
# public PyPI: make install TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
TORCH  ?= torch==2.13.0

.PHONY: install test test-slow run lint clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m ruff check diffinfer tests benchmarks scripts calibration
	$(PY) -m ruff format --check diffinfer tests benchmarks scripts calibration
	$(PY) -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# the diffusion posterior of a shipped held-out map beside the exact one (docs/usage.md)
run: $(STAMP)
	$(VENV)/bin/diffinfer infer examples/lognormal64/map1.npy --model lognormal64 \
		--reference exact --truth 0.224216 0.788392 --out runs/example

lint: $(STAMP)
	$(PY) -m ruff check diffinfer tests benchmarks scripts calibration
	$(PY) -m ruff format --check diffinfer tests benchmarks scripts calibration

clean:
	rm -rf $(VENV) .pytest_cache
