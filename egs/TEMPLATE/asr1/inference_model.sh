# Sourced by run.sh after it set ${asr_config}: sets ${inference_asr_model}, the checkpoint asr.sh decodes with.
#
# asr.sh decodes with valid.acc.ave.pth unless told otherwise, and that file only exists when the training config
# selects models on the validation accuracy; the CTC-only and transducer configs select on the validation loss
# (they report no accuracy), so asr.sh would stop at stage 12 with FileNotFoundError. Here the default follows the
# config that will be trained: "<phase>.<metric>.ave.pth" of its first best_model_criterion entry, which ESPnet's
# trainer always writes (a config without the key keeps asr.sh's default). The config is the last --asr_config among
# run.sh's arguments, else ${asr_config}. An --inference_asr_model argument still wins: run.sh passes its arguments
# after this value, and asr.sh keeps the last occurrence of an option.
_he_config="${asr_config}"
_he_args=("$@")
_he_i=0
while [ "${_he_i}" -lt "${#_he_args[@]}" ]; do
    # asr.sh's options are "--name value" or "--name=value" pairs (utils/parse_options.sh)
    case "${_he_args[_he_i]}" in
        --asr_config=*) _he_config="${_he_args[_he_i]#*=}"; _he_i=$((_he_i + 1)) ;;
        --asr_config) _he_config="${_he_args[_he_i + 1]:-}"; _he_i=$((_he_i + 2)) ;;
        --*=*) _he_i=$((_he_i + 1)) ;;
        *) _he_i=$((_he_i + 2)) ;;
    esac
done
if [ ! -f "${_he_config}" ]; then
    echo "run.sh: ERROR: the ASR training config ${_he_config} does not exist (in $(pwd))" >&2
    exit 1
fi
inference_asr_model="$(python3 -m hybrid_encoders.recipes.averaged_model "${_he_config}")" \
    || { echo "run.sh: ERROR: cannot read best_model_criterion from ${_he_config}" >&2; exit 1; }
unset _he_config _he_args _he_i
