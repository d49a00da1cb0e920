#!/usr/bin/env bash
# Stage 1 of asr.sh: AISHELL-1 through lhotse (resumable download into $AISHELL of db.sh, manifests, Kaldi
# directories data/{train,dev,test} with speaker-prefixed utterance ids and unspaced character transcripts).
# Options: --download true|false
set -euo pipefail
. ./path.sh
. ./db.sh

download=true
. utils/parse_options.sh

if [ -z "${AISHELL:-}" ]; then
    echo "local/data.sh: ERROR: AISHELL is empty in db.sh: set it to the directory that holds (or will receive)" \
         "aishell/" >&2
    exit 1
fi
python3 -m hybrid_encoders.recipes.lhotse_corpora aishell --corpus_root "${AISHELL}" --data_dir data \
    --download "${download}"
