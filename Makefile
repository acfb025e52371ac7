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

# `make test` and `make test-e2e` run their tests as groups at once (`make -j`): the deployments
# mostly wait on time-scaled jobs, so together the groups take about as long as the longest. The
# groups: the tests that start no deployment (unit and faults, in two halves that mostly wait on the
# emulator's time-scaled jobs; the `airflow dags test` tests), the `airflow standalone` deployments,
# the distributed stack. `make test` deselects the tests marked
# `slow`, `make test-e2e` selects only them. The browser's approval test must come before the tests
# that approve the same nightly run through the REST API: keep the order of STANDALONE_TESTS.
STANDALONE_TESTS = tests/e2e/test_approval_browser.py tests/e2e/test_gallery_browser.py tests/e2e/test_review_browser.py \
	tests/e2e/test_standalone.py tests/e2e/test_stale_event_race.py
DISTRIBUTED_TESTS = tests/e2e/test_distributed.py
DEPLOYMENT_TESTS = $(foreach t,$(STANDALONE_TESTS) $(DISTRIBUTED_TESTS),--ignore=$(t))
# The unit and fault tests' first half: about as long as the rest (pytest's durations, docs/testing.md).
UNIT_FIRST_HALF = tests/faults tests/unit/emulator tests/unit/test_output_integrity.py tests/unit/test_directory.py
MARK ?= not slow

.PHONY: demo test test-e2e test-unit test-floor lint docs bench clean \
	group-unit group-unit-first-half group-unit-second-half group-e2e group-no-deployment group-standalone group-distributed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/python scripts/demo.py

test: $(VENV)/.installed
	scripts/ensure-debian-packages
	@echo "make test: the docs site and five groups in parallel; each prints its results when it ends"
	$(MAKE) --no-print-directory -j6 --output-sync=target MARK="not slow" \
		docs group-unit-first-half group-unit-second-half group-e2e group-standalone group-distributed

# The end-to-end tests `make test` leaves out (marked `slow`): the batch campaign on the distributed
# stack, the killed triggerer on the standalone deployment, the stale-event race, the demo (twice),
# the packaging venv, the bench smokes, the batch DAG's re-run, killed worker and credit floor.
test-e2e: $(VENV)/.installed
	scripts/ensure-debian-packages
	@echo "make test-e2e: three groups in parallel; each prints its results when it ends"
	$(MAKE) --no-print-directory -j3 --output-sync=target MARK=slow \
		group-no-deployment group-standalone group-distributed

group-unit: group-unit-first-half group-unit-second-half

group-unit-first-half: $(VENV)/.installed
	@$(call pytest,$(VENV)/bin/python,-m "$(MARK)" $(UNIT_FIRST_HALF))

group-unit-second-half: $(VENV)/.installed
	@$(call pytest,$(VENV)/bin/python,-m "$(MARK)" tests --ignore=tests/e2e $(foreach t,$(UNIT_FIRST_HALF),--ignore=$(t)))

group-e2e: $(VENV)/.installed
	@$(call pytest,$(VENV)/bin/python,-m "$(MARK)" tests/e2e $(DEPLOYMENT_TESTS))

group-no-deployment: $(VENV)/.installed
	@$(call pytest,$(VENV)/bin/python,-m "$(MARK)" tests $(DEPLOYMENT_TESTS))

group-standalone: $(VENV)/.installed
	@$(call pytest,$(VENV)/bin/python,-m "$(MARK)" $(STANDALONE_TESTS))

group-distributed: $(VENV)/.installed
	@$(call pytest,$(VENV)/bin/python,-m "$(MARK)" $(DISTRIBUTED_TESTS))

test-unit: $(VENV)/.installed
	@$(call pytest,$(VENV)/bin/python,tests/unit)

# Proves the declared floor: the unit tests where Airflow's version matters (marked `floor`, listed
# in tests/conftest.py) against the oldest Airflow pyproject.toml admits.
test-floor:
	$(PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_VENV)/bin/pip install --quiet --upgrade pip
	$(FLOOR_VENV)/bin/pip install --quiet -e '.[test]' 'apache-airflow==$(AIRFLOW_FLOOR)'
	@$(call pytest,$(FLOOR_VENV)/bin/python,-m "floor and not slow" tests/unit)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check segmind_provider dags tests bench scripts
	$(VENV)/bin/ruff format --check segmind_provider dags tests bench scripts
	$(VENV)/bin/mypy

# The docs site (mkdocs.yml) in site/: every warning an error, a broken link or anchor included
# (about a second). The examples in the pages run in tests/unit/test_docs_examples.py.
docs: $(VENV)/.installed
	$(VENV)/bin/mkdocs build --strict --quiet

# The issue-6 benchmarks as docs/benchmarks.md reports them (about 15 minutes; not part of CI).
bench: $(VENV)/.installed
	$(VENV)/bin/python bench/throughput.py
	$(VENV)/bin/python bench/triggerer_scale.py --n 100,1000,10000

clean:
	rm -rf $(VENV) $(FLOOR_VENV) output artifacts .airflow-home site
