# Sourced by run.sh after path.sh: stop early, with what to do, when the plugin is missing from the Python
# environment that path.sh selected (asr.sh would otherwise fail later with "invalid choice: 'squeezeformer'"), and
# warn now about the tools asr.sh needs only in later stages (sox for stage 2, sclite for stage 13), rather than
# after days of training.
if ! python3 -c "import hybrid_encoders, espnet2" 2> /dev/null; then
    echo "run.sh: ERROR: $(command -v python3) cannot import hybrid_encoders and espnet2. Install the plugin into the" \
         "Python environment of ${ESPNET_ROOT:-$(cat .espnet_root)}/tools/activate_python.sh (README.md," \
         "'Install'): pip install -e '/path/to/hybrid-encoders[recipes]'" >&2
    exit 1
fi
if ! command -v sox > /dev/null; then
    echo "run.sh: WARNING: sox is not on PATH; asr.sh's stage 2 (speed perturbation) needs it (apt-get install sox," \
         "or ESPnet's tools/installers)" >&2
fi
if ! command -v sclite > /dev/null; then
    echo "run.sh: WARNING: sclite is not on PATH; asr.sh's stage 13 (scoring) needs it: apt-get install sctk" \
         "(path.sh finds /usr/lib/sctk/bin), or ESPnet's tools/installers/install_sctk.sh" >&2
fi
