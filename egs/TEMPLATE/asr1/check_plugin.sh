# Sourced by run.sh: stop early, with what to do, when the plugin is missing from the Python environment that
# path.sh selected (asr.sh would otherwise fail later with "invalid choice: 'squeezeformer'").
if ! python3 -c "import hybrid_encoders, espnet2" 2> /dev/null; then
    echo "run.sh: ERROR: $(command -v python3) cannot import hybrid_encoders and espnet2. Install the plugin into the" \
         "Python environment of ${ESPNET_ROOT:-$(cat .espnet_root)}/tools/activate_python.sh:" \
         "pip install 'hybrid-encoders[recipes]'" >&2
    exit 1
fi
