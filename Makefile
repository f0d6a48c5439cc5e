# nas-lab: `make lab` (students) and `make test` (everyone) are the two commands that matter.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Extra pip options, e.g. PIP_EXTRA="--index-url https://download.pytorch.org/whl/cpu" for a small CPU-only torch.
PIP_EXTRA ?=

.PHONY: lab test test-deps test-fast test-notebooks test-grading release student-dist grade venv clean-grading

venv: $(STAMP)

# Re-installs only when pyproject.toml changes, so a second `make` takes seconds.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(PIP_EXTRA) -e '.[grading,dev]'
	@touch $(STAMP)

# --allow-root only when run as root (containers), where Jupyter refuses to start otherwise.
lab: $(STAMP)
	$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) labs/

# Two pytest workers, one test file each at a time (--dist loadfile keeps a file's shared fixtures in one
# process): notebook kernels run one torch thread, so the two cores of a laptop or CI box both work.
TEST_JOBS ?= 2
test: $(STAMP) test-deps
	$(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadfile --durations=15

# Programs from outside PyPI that the browser and hub tests drive (playwright and jupyterhub are in the dev extra):
# Debian's chromium, installed when missing and root (tests/test_browser.py fails saying how, without it), and
# JupyterHub's proxy from npm into .venv/node (tests/test_hub.py is skipped where npm is absent). No downloads later.
CHP := $(VENV)/node/node_modules/.bin/configurable-http-proxy
test-deps: $(STAMP)
	@if ! command -v chromium >/dev/null 2>&1 && [ -z "$$NAS_LAB_CHROMIUM" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }; \
	  else echo "note: no chromium: the browser tests will fail (as root: apt-get install -y chromium)"; fi; fi
	@if [ ! -x $(CHP) ] && ! command -v configurable-http-proxy >/dev/null 2>&1; then \
	  if command -v npm >/dev/null 2>&1; then \
	    npm install --silent --no-audit --no-fund --prefix $(VENV)/node configurable-http-proxy; \
	  else echo "note: npm is absent: the hub smoke test (tests/test_hub.py) will be skipped"; fi; fi

# Tiers (tests/conftest.py): unit, notebooks, grading, browser. test-fast = the library and CLI (under 2 minutes).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -x -m "unit and not slow"

test-notebooks: $(STAMP)
	$(BIN)/python -m pytest -q -m notebooks

test-grading: $(STAMP)
	$(BIN)/python -m pytest -q -m grading

release: $(STAMP)
	$(BIN)/python autograder/release.py

# What students get (released notebooks, library, data, README; no solutions, hidden tests, benchmarks, docs).
student-dist: $(STAMP)
	$(BIN)/python autograder/student_dist.py --zip

grade: $(STAMP)
	$(BIN)/nas-lab grade $(LAB) $(SUBMISSIONS) $(if $(OUT),--out $(OUT))

clean-grading:
	rm -rf autograder/submitted autograder/autograded autograder/feedback autograder/gradebook.db
