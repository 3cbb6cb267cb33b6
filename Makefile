# jvpn: `sudo make demo` runs the main job, `sudo make test` the tests (lint
# first). Both run the idempotent set-up first (Debian packages, kernel
# headers, bpffs, the venv with bcc): a fresh Debian/Ubuntu machine needs
# nothing else. `make lint` and `make test-unit` need no root once the venv
# exists (made by `sudo make setup`, or by hand: see README.md, Tests).

VENV ?= .venv
PYTEST_ARGS ?=
PYTEST = $(VENV)/bin/pytest
# The test tiers, one folder each under tests/ (README.md, Tests).
TIERS = unit cli bpf netns cluster packaging

.PHONY: setup lint test test-unit $(addprefix test-,$(filter-out unit,$(TIERS))) demo bench clean

setup:
	bash scripts/setup.sh

# Only when there is no venv yet, so that lint and test-unit need no root.
$(PYTEST):
	bash scripts/setup.sh

lint: $(PYTEST)
	$(VENV)/bin/ruff check .

# Everything: lint, then every tier (kernel tests need root, bcc and bpffs).
test: setup lint
	$(PYTEST) $(PYTEST_ARGS)

# Every test that needs no root, bcc or kernel, whichever tier it is in.
test-unit: $(PYTEST)
	$(PYTEST) -m "not kernel" $(PYTEST_ARGS)

# One tier: sudo make test-bpf, test-netns, test-cluster, ...
$(addprefix test-,$(filter-out unit,$(TIERS))): test-%: setup
	$(PYTEST) tests/$* $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/jvpn-xdp demo

bench: setup
	$(VENV)/bin/jvpn-xdp bench xdp --json

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis *.egg-info
