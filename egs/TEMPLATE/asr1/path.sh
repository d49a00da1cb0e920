# Environment of an egs/<corpus>/asr1 recipe of hybrid-encoders, sourced by asr.sh and run.sh.
#
# ESPnet's template path.sh finds the ESPnet checkout as ../../.. of the recipe, which holds only inside ESPnet's own
# egs2/ tree. This one reads the checkout that setup.sh recorded in .espnet_root ($ESPNET_ROOT overrides it), then sets
# up the same environment: Kaldi utils/ on PATH, C locale, ESPnet's Python environment and tool paths.
if [ -z "${ESPNET_ROOT:-}" ]; then
    if [ ! -f .espnet_root ]; then
        echo "path.sh: ERROR: run ./setup.sh /path/to/espnet first (no .espnet_root in $(pwd))" >&2
        exit 1
    fi
    ESPNET_ROOT="$(cat .espnet_root)"
fi
MAIN_ROOT="${ESPNET_ROOT}"
KALDI_ROOT="${MAIN_ROOT}/tools/kaldi"
export PATH="${PWD}/utils:${PATH}"
if [ -f "${KALDI_ROOT}/tools/config/common_path.sh" ]; then
    . "${KALDI_ROOT}/tools/config/common_path.sh"
fi
export LC_ALL=C
# ESPnet's Python environment (tools/activate_python.sh) when the checkout has one, else the active environment.
# hybrid-encoders must be installed in it: pip install hybrid-encoders[recipes].
if [ -f "${MAIN_ROOT}/tools/activate_python.sh" ]; then
    . "${MAIN_ROOT}/tools/activate_python.sh"
fi
if [ -f "${MAIN_ROOT}/tools/extra_path.sh" ]; then
    . "${MAIN_ROOT}/tools/extra_path.sh"
fi
export PATH="${MAIN_ROOT}/utils:${MAIN_ROOT}/espnet/bin:${PATH}"
export OMP_NUM_THREADS=1
export PYTHONIOENCODING=UTF-8
