# Environment of an egs/<corpus>/asr1 recipe of hybrid-encoders, sourced by asr.sh and run.sh.
#
# ESPnet's template path.sh finds the ESPnet checkout as ../../.. of the recipe, which holds only inside ESPnet's own
# egs2/ tree. This one reads the checkout that setup.sh recorded in .espnet_root ($ESPNET_ROOT overrides it), then sets
# up the same environment: Kaldi utils/ on PATH, C locale, ESPnet's Python environment and tool paths (plus a system
# sclite), and sources the recipe's local/path.sh last when it has one.
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
# sclite, for asr.sh's scoring (stage 13), when nothing above put one on PATH: ESPnet's
# tools/installers/install_sctk.sh builds it in tools/sctk/bin, Debian's and Ubuntu's `sctk` package installs it in
# /usr/lib/sctk/bin (with only a `sctk` wrapper on PATH). SCTK_BIN_DIRS (colon-separated) replaces that list.
if ! command -v sclite > /dev/null; then
    IFS=: read -r -a _sctk_dirs <<< "${SCTK_BIN_DIRS:-${MAIN_ROOT}/tools/sctk/bin:/usr/lib/sctk/bin}"
    for _sctk_dir in "${_sctk_dirs[@]}"; do
        if [ -x "${_sctk_dir}/sclite" ]; then
            export PATH="${PATH}:${_sctk_dir}"
            break
        fi
    done
    unset _sctk_dirs _sctk_dir
fi
export OMP_NUM_THREADS=1
export PYTHONIOENCODING=UTF-8
# A recipe's own additions (tool paths, environment variables), sourced last so that they win, as ESPnet's template
# path.sh does; optional here.
if [ -f local/path.sh ]; then
    . local/path.sh
fi
