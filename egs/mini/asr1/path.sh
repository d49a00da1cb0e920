# Environment of the mini recipe. Uses the repository's virtual environment (.venv at the repository root, made by
# `make demo` / `make venv`) when no virtual environment is active.
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
if [ -z "${VIRTUAL_ENV:-}" ] && [ -x "${repo_root}/.venv/bin/python" ]; then
    export PATH="${repo_root}/.venv/bin:${PATH}"
fi
export PYTHONIOENCODING=UTF-8
export PYTHONUNBUFFERED=1
export LC_ALL=C
