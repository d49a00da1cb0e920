#!/usr/bin/env bash
# LibriSpeech 960 h with ESPnet's asr.sh and a hybrid-encoders encoder. First: ./setup.sh /path/to/espnet, then set
# LIBRISPEECH in db.sh (the corpus is downloaded there by stage 1 if absent, ~60 GB). Any asr.sh option can be added,
# e.g.
#   ./run.sh --stage 10 --asr_config conf/tuning/train_asr_zipformer_m_transducer.yaml \
#       --inference_config conf/decode_asr_transducer.yaml
# Decoding uses the checkpoint averaged on the config's first best_model_criterion (valid.loss.ave.pth here, see
# ../../TEMPLATE/asr1/inference_model.sh) unless --inference_asr_model says otherwise.
set -euo pipefail
cd "$(dirname "$0")"
[ -e asr.sh ] || { echo "run.sh: ERROR: asr.sh is missing: run ./setup.sh /path/to/espnet first" >&2; exit 1; }
. ./path.sh
. ../../TEMPLATE/asr1/check_env.sh

train_set=train_960
valid_set=dev
test_sets="test_clean test_other dev_clean dev_other"

asr_config=conf/tuning/train_asr_squeezeformer_sm.yaml
inference_config=conf/decode_asr.yaml
. ../../TEMPLATE/asr1/inference_model.sh   # sets inference_asr_model from the config

./asr.sh \
    --lang en \
    --ngpu 4 \
    --nj 32 \
    --inference_nj 32 \
    --nbpe 5000 \
    --max_wav_duration 30 \
    --speed_perturb_factors "0.9 1.0 1.1" \
    --audio_format flac.ark \
    --feats_type raw \
    --use_lm false \
    --asr_config "${asr_config}" \
    --inference_config "${inference_config}" \
    --inference_asr_model "${inference_asr_model}" \
    --train_set "${train_set}" \
    --valid_set "${valid_set}" \
    --test_sets "${test_sets}" \
    --bpe_train_text "data/${train_set}/text" \
    --lm_train_text "data/${train_set}/text" "$@"
