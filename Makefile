# Entry points of the suite. `make demo` and `make test` are the README's quick start.
VENV := .venv
PY := $(VENV)/bin/python
export MUJOCO_GL ?= egl

.PHONY: env demo test test-fast colcon bench lint clean

env:
	@bash scripts/bootstrap.sh

demo: env
	$(VENV)/bin/so101-driver-demo

test: env
	$(PY) -m pytest

colcon: env
	rm -rf build install log
	$(VENV)/bin/colcon build --base-paths src --event-handlers console_direct-
	@echo "colcon build: OK"

bench: env
	$(PY) bench/bench_bus.py

clean:
	rm -rf build install log .pytest_cache bench/results
