#!/usr/bin/env bash
# Create (first use) or refresh the suite's virtual environment in .venv.
# Installs the pinned dependencies and the three packages in editable mode. Re-runs are
# no-ops unless requirements.txt, constraints.txt or a package's setup.py changed.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
  local cand
  for cand in "${PYTHON:-}" python3.12 /usr/bin/python3.12 /usr/local/bin/python3.12; do
    [ -n "$cand" ] || continue
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
      command -v "$cand"; return 0
    fi
  done
  # pyenv installs a 3.12 that its shim hides unless selected
  for cand in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12; do
    if [ -x "$cand" ]; then echo "$cand"; return 0; fi
  done
  return 1
}

stamp_of() { cat requirements.txt constraints.txt src/*/setup.py | sha256sum | cut -c1-16; }

if [ ! -x .venv/bin/python ]; then
  py=$(find_python) || { echo "error: Python 3.12 not found (set PYTHON=/path/to/python3.12)" >&2; exit 1; }
  echo "[bootstrap] creating .venv with $py"
  "$py" -m venv .venv
fi
if [ "$(cat .venv/.so101-stamp 2>/dev/null)" != "$(stamp_of)" ]; then
  echo "[bootstrap] installing pinned dependencies (first run: ~5.5 GB, a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip

  .venv/bin/python -m pip install -q -r requirements.txt -c constraints.txt
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation \
    -e src/so101_driver -e src/eval_monitor -e src/pi05_policy
  stamp_of > .venv/.so101-stamp
fi
