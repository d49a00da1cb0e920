#!/usr/bin/env bash
# Create ./.venv with the tested stack (requirements/tested.txt) and this package installed editable.
# Re-running is a no-op (a few ms) unless requirements/tested.txt or setup.py changed.
# Override the interpreter with PYTHON=/path/to/python3.11.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
python=${PYTHON:-python3}
stamp="$venv/.hybrid-encoders-stamp"
want=$(cat requirements/tested.txt setup.py pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/python" ]; then
    exit 0
fi
echo "==> setting up $venv (torch, torchaudio, ESPnet and friends: about 3 minutes on a fresh machine)"
"$python" -c 'import sys; assert sys.version_info >= (3, 9), "Python >= 3.9 needed"' \
    || { echo "error: $python is older than 3.9; set PYTHON=/path/to/python3.11" >&2; exit 1; }
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
# pip 25+ refuses espnet 202511's dependency ci_sdr (it declares a git URL dependency in an extra); README.md,
# "Install", gives the alternative that keeps a newer pip
"$venv/bin/python" -m pip install --quiet "pip==24.3.1" wheel
"$venv/bin/python" -m pip install --quiet -r requirements/tested.txt
"$venv/bin/python" -m pip install --quiet --no-deps -e .
"$venv/bin/hybrid-encoders" doctor --quick
echo "$want" > "$stamp"
