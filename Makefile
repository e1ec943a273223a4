# Entry points of the suite. `make demo` and `make test` are the README's quick start.
VENV := .venv
PY := $(VENV)/bin/python
export MUJOCO_GL ?= egl

.PHONY: env demo demo-driver test colcon bench clean

env:
	@bash scripts/bootstrap.sh

# the whole suite on a laptop: simulated cell, scripted expert, monitor, recorder, report
demo: env
	$(VENV)/bin/so101 demo

# the driver alone: STS3215 bus emulator + so101_arm + a scripted trajectory
demo-driver: env
	$(VENV)/bin/so101-driver-demo

test: env
	$(PY) -m pytest

colcon: env
	rm -rf build install log
	$(VENV)/bin/colcon build --base-paths src --event-handlers console_direct-
	@echo "colcon build: OK"

bench: env
	$(PY) bench/bench_bus.py
	$(PY) bench/bench_sim.py
	$(PY) bench/bench_camera.py
	$(PY) bench/bench_eval.py
	$(PY) bench/bench_policy.py
	$(PY) bench/bench_rtc.py
	$(PY) bench/bench_dataset.py
	$(PY) bench/bench_train.py

clean:
	rm -rf build install log .pytest_cache bench/results
