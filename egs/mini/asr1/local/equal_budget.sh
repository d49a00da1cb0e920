#!/usr/bin/env bash
# The equal-training-time comparison of README.md ("Equal training time"): every config of --configs is trained,
# decoded and scored (run.sh stages 5-7) once per seed of --seeds, then the WER of each test set is tabulated over the
# seeds (mean, range, standard deviation). A config's training budget is its max_epoch, set to the epochs that take
# the wall-clock of the conformer's 10; --measure true first re-measures the step-time ratios behind those numbers
# (hybrid_encoders.recipes.step_time, alternating rounds; the result is printed, the YAMLs are not changed).
# Run stages 1-4 of run.sh first. Each run goes to exp/asr_<config>_seed<seed>_char, its log to
# exp/equal_budget_<config>_seed<seed>.log; finished runs are skipped by run.sh's markers.
set -euo pipefail

help_message="Usage: $0 [--configs 'conformer squeezeformer squeezeformer_interctc squeezeformer_ctc squeezeformer_ctc_d176
  hybridformer zipformer squeezeformer_crctc conformer_interctc conformer_ctc']
  [--seeds '2024 1 2'] [--parallel 1] [--measure false] [--python python3]"

cd "$(dirname "$0")/.."
. ./path.sh

# conf/train_asr_<name>.yaml; the first is the reference
configs="conformer squeezeformer squeezeformer_interctc squeezeformer_ctc squeezeformer_ctc_d176 hybridformer zipformer
    squeezeformer_crctc conformer_interctc conformer_ctc"
seeds="2024 1 2"        # 2024 is the seed in the YAMLs (the run of ./run.sh --asr_config ...)
parallel=1              # runs at a time (each trains with the machine's threads; 1 on a 2-core machine)
measure=false           # re-measure the step-time ratios first
python=python3

. local/parse_options.sh "$@"

for config in ${configs}; do
    [ -f "conf/train_asr_${config}.yaml" ] || { echo "$0: conf/train_asr_${config}.yaml not found" >&2; exit 1; }
done
[[ "${parallel}" =~ ^[1-9][0-9]*$ ]] || { echo "$0: --parallel must be a positive integer" >&2; exit 1; }

if [ "${measure}" = true ]; then
    measure_args=()
    for config in ${configs}; do measure_args+=(--config "conf/train_asr_${config}.yaml"); done
    "${python}" -m hybrid_encoders.recipes.step_time "${measure_args[@]}" --output exp/step_time.json
fi

# run_one CONFIG SEED: run.sh stages 5-7 for one config and seed.
run_one() {
    local log=exp/equal_budget_$1_seed$2.log
    echo "$(date +%H:%M:%S) $1 seed $2: started (log ${log})"
    if ./run.sh --python "${python}" --stage 5 --asr_config "conf/train_asr_$1.yaml" --asr_tag "$1_seed$2" \
            --asr_args "--seed $2" > "${log}" 2>&1; then
        echo "$(date +%H:%M:%S) $1 seed $2: done"
    else
        echo "$(date +%H:%M:%S) $1 seed $2: FAILED, see ${log}" >&2
        return 1
    fi
}

mkdir -p exp
failed=0
for seed in ${seeds}; do
    for config in ${configs}; do
        while [ "$(jobs -rp | wc -l)" -ge "${parallel}" ]; do wait -n || failed=1; done
        run_one "${config}" "${seed}" &
    done
done
while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n || failed=1; done

rows=()
for config in ${configs}; do rows+=(--row "${config}=exp/asr_${config}_seed*_char"); done
"${python}" -m hybrid_encoders.recipes.report seeds --test_sets test test_other "${rows[@]}" \
    --decode_tag 'decode_decode_asr_valid.*.ave_lm_char_valid.loss.ave'
exit "${failed}"
