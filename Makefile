# jvpn: `sudo make demo` runs the main job, `sudo make test` the tests.
# Both run the idempotent set-up first (Debian packages, kernel headers, bpffs,
# the venv with bcc): a fresh Debian/Ubuntu machine needs nothing else.

VENV ?= .venv
PYTEST_ARGS ?=

.PHONY: setup test test-unit demo bench clean

setup:
	bash scripts/setup.sh

test: setup
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# The tests that need no root, bcc or kernel (still after set-up for deps).
test-unit: setup
	$(VENV)/bin/pytest -m "not kernel" $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/jvpn-xdp demo

bench: setup
	$(VENV)/bin/jvpn-xdp bench xdp --json

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis *.egg-info
