# Two commands for a stranger: `make demo` and `make test`. Each bootstraps what it needs.
.PHONY: demo test test-all lint typecheck bench schema bootstrap clean image image-test flash

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.bootstrapped

$(STAMP): uv.lock pyproject.toml scripts/bootstrap.sh
	./scripts/bootstrap.sh
	@touch $@

bootstrap: $(STAMP)

# The package contract byte by byte (a few seconds), then the whole journey: a registry and
# two simulated stations as processes, four enrollments, a duplicate adjudicated, cards
# verified (2-3 minutes); it keeps serving until Ctrl-C, or exits after its summary with
# `make demo ONCE=1`. scripts/demo_devices.py and scripts/demo_registry.py still show the
# devices and the registry alone.
demo: $(STAMP)
	$(PY) scripts/demo.py
	ONCE=$(ONCE) $(PY) scripts/demo_journey.py

# Fast suites plus lint and types; RUN_SLOW=1 adds the slow ones. Two pytest workers (the
# machines here have two cores; most suites wait on processes they start); a worker that
# runs out of tests takes some of the other's; the slowest tests are listed at the end.
# The bootstrap installs Chromium, so a kiosk test that cannot start fails, never skips.
PYTEST_WORKERS ?= 2
PYTEST := $(VENV)/bin/pytest -q -n $(PYTEST_WORKERS) --dist worksteal --durations=15

test test-all: export UI_TESTS_REQUIRED ?= 1
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PYTEST)

test-all: $(STAMP)
	RUN_SLOW=1 $(PYTEST)

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) bench/package.py
	$(PY) bench/face.py
	$(PY) bench/devices.py

# Regenerate the exported JSON Schema (a test fails when it is stale).
schema: $(STAMP)
	$(PY) -m enrollment schema --out docs/schema/enrollment-record.v1.json

# The station's OS image (Debian arm64 for the Raspberry Pi 4; as root on Debian 12
# x86_64; 15-25 minutes the first time): build/image/*.img, .img.zst, .sha256, SBOM.
image: $(STAMP)
	./image/host-setup.sh
	$(PY) -m image.build

# Build, then boot it under QEMU until the station service answers and the kiosk runs.
image-test: image
	$(PY) -m image.qemu

# Onto a card or USB disk, with safety checks: make flash DEVICE=/dev/sdX
flash: $(STAMP)
	@test -n "$(DEVICE)" || { echo "usage: make flash DEVICE=/dev/sdX"; exit 2; }
	$(PY) -m image.flash --device $(DEVICE)

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache .hypothesis
