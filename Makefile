# The two commands a newcomer needs: `make demo` (the main job) and `make test` (what CI runs first).
# Each creates and fills its own virtual environment; only python3 (3.10+) must already be present.
PYTHON ?= python3
VENV ?= .venv
FLOOR_VENV ?= .venv-floor
AIRFLOW_FLOOR ?= 3.2.0

# pytest where selecting no test (its exit code 5) is an error said as such: every selection below
# must pick tests, and an empty one means the markers or paths that pick them went missing.
PYTEST_FLAGS = -p no:cacheprovider -ra --durations=10
define pytest
$(1) -m pytest $(PYTEST_FLAGS) $(2); status=$$?; \
if [ $$status -eq 5 ]; then echo "error: pytest selected no tests from: $(2)"; fi; exit $$status
endef

# `make test` runs three groups at once (each mostly waits on time-scaled jobs, so together they take
# about as long as the longest): everything but the real deployments, the `airflow standalone`
# deployment (the nightly run, its approval and gallery in the browser), and the distributed stack
# (one campaign). Tests marked `slow` are left to `make test-e2e`.
STANDALONE_TESTS = tests/e2e/test_standalone.py tests/e2e/test_approval_browser.py tests/e2e/test_gallery_browser.py
DISTRIBUTED_TESTS = tests/e2e/test_distributed.py

.PHONY: demo test test-e2e test-unit test-floor lint bench clean test-group-local test-group-standalone \
	test-group-distributed test-group-e2e-local test-group-e2e-distributed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/python scripts/demo.py

test: $(VENV)/.installed
	scripts/ensure-debian-packages
	@echo "make test: three groups in parallel; each prints its results when it ends"
	$(MAKE) --no-print-directory -j3 --output-sync=target test-group-local test-group-standalone test-group-distributed

test-group-local: $(VENV)/.installed
	@$(call pytest,$(VENV)/bin/python,-m "not slow" tests $(foreach t,$(STANDALONE_TESTS) $(DISTRIBUTED_TESTS),--ignore=$(t)))

test-group-standalone: $(VENV)/.installed
	@$(call pytest,$(VENV)/bin/python,-m "not slow" $(STANDALONE_TESTS))

test-group-distributed: $(VENV)/.installed
	@$(call pytest,$(VENV)/bin/python,-m "not slow" $(DISTRIBUTED_TESTS))

# The end-to-end tests `make test` leaves out (marked `slow`): the batch campaign on the distributed
# stack, the stale-event race, the demo (twice), the packaging venv, the bench smokes, the batch
# DAG's re-run, killed worker and credit floor. CI runs them; two groups in parallel.
test-e2e: $(VENV)/.installed
	scripts/ensure-debian-packages
	@echo "make test-e2e: two groups in parallel; each prints its results when it ends"
	$(MAKE) --no-print-directory -j2 --output-sync=target test-group-e2e-local test-group-e2e-distributed

test-group-e2e-local: $(VENV)/.installed
	@$(call pytest,$(VENV)/bin/python,-m slow tests --ignore=$(DISTRIBUTED_TESTS))

test-group-e2e-distributed: $(VENV)/.installed
	@$(call pytest,$(VENV)/bin/python,-m slow $(DISTRIBUTED_TESTS))

test-unit: $(VENV)/.installed
	@$(call pytest,$(VENV)/bin/python,tests/unit)

# Proves the declared floor: the unit tests where Airflow's version matters (marked `floor`, listed
# in tests/conftest.py) against the oldest Airflow pyproject.toml admits.
test-floor:
	$(PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_VENV)/bin/pip install --quiet --upgrade pip
	$(FLOOR_VENV)/bin/pip install --quiet -e '.[test]' 'apache-airflow==$(AIRFLOW_FLOOR)'
	@$(call pytest,$(FLOOR_VENV)/bin/python,-m floor tests/unit)

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
