# sewerbench set-up. `make repro` = venv + install + sewerbench repro (dvc repro, stages side by side); `make test` = venv + install + tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install repro test check clean mutants

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# `sewerbench repro` = dvc repro with independent stages side by side (one per core on the
# smoke profile); plain `dvc repro` gives the same files, one stage at a time.
repro: install
	PATH="$(abspath $(VENV))/bin:$$PATH" sewerbench repro

# Two pytest workers each run multi-threaded torch trainings on 2 cores: OpenMP threads that
# spin-wait for a core the other worker holds slow both down (a learned check case beside a busy
# 2-thread process: 219 s spinning, 82 s with PASSIVE, the same numbers).
test: install
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q -n 2 --dist loadfile --durations=15 tests
	PATH="$(abspath $(VENV))/bin:$$PATH" sewerbench check

# Mutation testing (not part of `make test` / .ci/run): plants a fixed list of bugs, one at a
# time, in a temporary copy of the tree and reports killed/survived (tests/mutation/run_mutants.py).
mutants: install
	$(PY) tests/mutation/run_mutants.py

clean:
	rm -rf $(VENV) .pytest_cache
