#!/usr/bin/env bash
# Stage 1 of asr.sh: LibriSpeech through lhotse (resumable download into $LIBRISPEECH of db.sh, manifests, Kaldi
# directories data/{train_clean_100,...,test_other} plus the joined data/train_960 and data/dev).
# Options: --download true|false, --parts "dev-clean test-clean ...", --nj N
set -euo pipefail
. ./path.sh
. ./db.sh

download=true
parts="train-clean-100 train-clean-360 train-other-500 dev-clean dev-other test-clean test-other"
nj=8
. utils/parse_options.sh

if [ -z "${LIBRISPEECH:-}" ]; then
    echo "local/data.sh: ERROR: LIBRISPEECH is empty in db.sh: set it to the directory that holds (or will receive)" \
         "LibriSpeech/" >&2
    exit 1
fi
# shellcheck disable=SC2086  # parts is a list
python3 -m hybrid_encoders.recipes.lhotse_corpora librispeech --corpus_root "${LIBRISPEECH}" --data_dir data \
    --download "${download}" --parts ${parts} --nj "${nj}"
