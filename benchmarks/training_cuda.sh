#!/usr/bin/env bash
# The training-step comparison of docs/benchmarks.md (issue 16, item 2) on a CUDA GPU: time and
# torch.cuda.max_memory_allocated growth of one forward + backward at 30 s, in fp32 and under bf16 / fp16 autocast,
# for ESPnet's conformer, our Zipformer-M and Squeezeformer-SM (plain and with activation checkpointing) and, where an
# icefall checkout is given, icefall's own Zipformer-M. One `hybrid-encoders bench` run per batch size and precision;
# the encoders take turns inside each run.
#
# Usage: benchmarks/training_cuda.sh OUT_DIR [ICEFALL_DIR]
#   OUT_DIR      each run's results.json / results.md go to OUT_DIR/b<batch>_<precision>/
#   ICEFALL_DIR  an icefall checkout (see docs/benchmarks.md: `git archive` of egs/librispeech/ASR/zipformer is enough)
# Environment: PYTHON (default python3), BATCHES (default "2 16"), PRECISIONS (default "fp32 bf16 fp16"),
#   RUNS (timed rounds, default 5).
set -euo pipefail

[ $# -ge 1 ] && [ $# -le 2 ] || { sed -n '7,12p' "$0" >&2; exit 2; }
out=$1
icefall=${2:-}
python=${PYTHON:-python3}
batches=${BATCHES:-2 16}
precisions=${PRECISIONS:-fp32 bf16 fp16}
runs=${RUNS:-5}

reference=()
if [ -n "${icefall}" ]; then
    [ -d "${icefall}/egs/librispeech/ASR/zipformer" ] || {
        echo "$0: ${icefall} has no egs/librispeech/ASR/zipformer (not an icefall checkout)" >&2
        exit 2
    }
    reference=(--reference-icefall "${icefall}")
fi

failed=0  # one failed run (an out-of-memory reference, say) does not stop the others
for batch in ${batches}; do
    for precision in ${precisions}; do
        amp=()
        [ "${precision}" = fp32 ] || amp=(--amp "${precision}")
        echo "== batch ${batch} x 30 s, ${precision}"
        "${python}" -m hybrid_encoders bench --device cuda --mode training --lengths 30 --batch "${batch}" \
            --runs "${runs}" --warmup 2 --no-plots "${amp[@]}" "${reference[@]}" \
            --encoders conformer:ls100 zipformer:m zipformer:m+activation_checkpointing=true \
                squeezeformer:sm squeezeformer:sm+activation_checkpointing=true \
            --out "${out}/b${batch}_${precision}" || { echo "$0: batch ${batch} ${precision} failed" >&2; failed=1; }
    done
done
exit "${failed}"
