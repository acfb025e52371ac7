# The two commands a newcomer needs: `make demo` (the main job) and `make test` (what CI runs).
# Each creates and fills its own virtual environment; only python3 (3.10+) must already be present.
PYTHON ?= python3
VENV ?= .venv
FLOOR_VENV ?= .venv-floor
AIRFLOW_FLOOR ?= 3.2.0

.PHONY: demo test test-unit test-floor lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/python scripts/demo.py

test: $(VENV)/.installed
	scripts/ensure-debian-packages
	$(VENV)/bin/python -m pytest -p no:cacheprovider -ra tests

test-unit: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -p no:cacheprovider -ra tests/unit

# Proves the declared floor: the unit suite against the oldest Airflow pyproject.toml admits.
test-floor:
	$(PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_VENV)/bin/pip install --quiet --upgrade pip
	$(FLOOR_VENV)/bin/pip install --quiet -e '.[test]' 'apache-airflow==$(AIRFLOW_FLOOR)'
	$(FLOOR_VENV)/bin/python -m pytest -p no:cacheprovider -ra tests/unit

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check segmind_provider dags tests bench scripts
	$(VENV)/bin/ruff format --check segmind_provider dags tests bench scripts
	$(VENV)/bin/mypy

# The issue-6 benchmarks as docs/benchmarks.md reports them (about 15 minutes; not part of CI).
bench: $(VENV)/.installed
	$(VENV)/bin/python bench/throughput.py
	$(VENV)/bin/python bench/triggerer_scale.py --n 100,1000,10000

clean:
	rm -rf $(VENV) $(FLOOR_VENV) output artifacts .airflow-home
