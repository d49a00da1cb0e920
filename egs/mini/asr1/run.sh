#!/usr/bin/env bash
# A complete ASR experiment on a laptop CPU, with no download: an eSpeak NG corpus synthesised on the fly, then
# ESPnet's own entry points in the stage order of egs2/TEMPLATE/asr1/asr.sh. Stages:
#   1  data           synthesise the corpus; Kaldi dirs data/{train,dev,dev_other,test,test_other}, lhotse manifests
#                     in data/manifests (*_other: sentence structures and words the training grammar never produces)
#   2  token list     sentencepiece model (--token_type bpe) or characters (--token_type char), ESPnet tokens.txt
#   3  LM             LM text: the training transcripts and --lm_text_sentences more sentences of the training
#                     grammar (text only, none of them in a dev or test set); lm_train --collect_stats true,
#                     aggregate_stats_dirs, lm_train (skipped with --use_lm false)
#   4  collect stats  asr_train --collect_stats true in --nj jobs, aggregate_stats_dirs (feats_stats.npz, shapes)
#   5  train          asr_train; the trainer averages the --keep_nbest_models best checkpoints at the end
#   6  decode         asr_inference in --nj jobs on each of --test_sets, with the LM of stage 3 (--use_lm true);
#                     with --streaming true: hybrid_encoders.bin.asr_inference_streaming chunk by chunk and simulated
#                     at each of --streaming_chunks, and simulated with full context (CTC prefix beam search, no LM)
#   7  score          WER/CER with per-utterance alignments, RESULTS.md and training_curves.png in the exp dir
# A finished stage is skipped when run again with the same options (its marker file is named in the message).
set -euo pipefail

help_message="Usage: $0 [--stage N] [--stop_stage N] [--asr_config conf/X.yaml] [--inference_config conf/Y.yaml]
  [--nj N] [--ngpu N] [--corpus_size N] [--seed N] [--token_type bpe|char] [--nbpe N] [--test_sets 'test test_other']
  [--asr_tag TAG] [--asr_args '...'] [--use_lm true|false] [--lm_config conf/train_lm.yaml] [--lm_args '...']
  [--lm_text_sentences N]
  [--inference_args '...'] [--inference_asr_model valid.loss.ave.pth] [--inference_lm valid.loss.ave.pth]
  [--espeak_backend auto|program|library] [--python python3]
  [--streaming true|false] [--streaming_chunks 'CHUNK:LEFT ...']"

cd "$(dirname "$0")"
. ./path.sh

stage=1                 # first stage to run
stop_stage=7            # last stage to run
nj=2                    # parallel jobs for synthesis, statistics and decoding
ngpu=0                  # GPUs for training and decoding (0: CPU)
corpus_size=1800        # utterances over train, dev, dev_other, test, test_other (76 / 5 / 4 / 7.5 / 7.5 %)
seed=0                  # corpus seed: same seed, same audio
espeak_backend=auto     # auto: the espeakng-loader wheel (reproducible), else the espeak-ng program
token_type=char         # char (default: measured 37.5 % vs 98 % WER with bpe, 10 epochs) or bpe
nbpe=200                # sentencepiece vocabulary size
asr_config=""           # default: conf/train_asr_squeezeformer_ctc_d176.yaml
                        # (conf/train_asr_zipformer_streaming.yaml if streaming)
inference_config=""     # default: conf/decode_asr.yaml (conf/decode_asr_streaming.yaml if streaming)
inference_asr_model=""  # default: the average of the config's first best_model_criterion (valid.acc.ave.pth, ...)
use_lm=""               # train a character/BPE LSTM LM on the training transcripts and decode with it (default: true,
                        # false if streaming: the streaming search fuses no LM)
streaming=false         # true: train a causal (streaming) model and decode it with asr_inference_streaming
streaming_chunks="16:128 32:256"  # chunk_size:left_context_frames (50 Hz frames: 16 = 320 ms) decoded if streaming
lm_config=conf/train_lm.yaml
lm_args=""              # extra lm_train options, e.g. "--max_epoch 5"
lm_text_sentences=5472  # sentences of the training grammar added to the LM's text (4x the default's transcripts;
                        # asr.sh's --lm_train_text); 0: the training transcripts only
inference_lm=valid.loss.ave.pth
asr_tag=""              # default: the config's file name without train_ and .yaml
asr_args=""             # extra asr_train options, e.g. "--max_epoch 4"
inference_args=""       # extra asr_inference options, e.g. "--beam_size 10"
test_sets="test test_other"  # any of dev, dev_other, test, test_other
python=python3

. local/parse_options.sh "$@"

recipe_start=${SECONDS}
log() { echo "$(date +%H:%M:%S) [run.sh] $*"; }
die() { echo "$(date +%H:%M:%S) [run.sh] ERROR: $*" >&2; exit 1; }
banner() {
    echo "======================================================================================"
    log "Stage $1: $2   (recipe time so far $(( (SECONDS - recipe_start) / 60 ))m$(( (SECONDS - recipe_start) % 60 ))s)"
    echo "======================================================================================"
}
# require PATH STAGE: a stage's input must exist, else say which stage makes it.
require() { [ -e "$1" ] || die "$1 is missing: it is made by stage $2; run ./run.sh --stage $2 first"; }
# is_done FILE SIGNATURE: true when FILE holds SIGNATURE (the stage already ran with these options).
is_done() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }
# run_jobs LOGDIR NAME N CMD...: run CMD with JOB replaced by 1..N in parallel, one log each; fail with a log tail.
run_jobs() {
    local logdir=$1 name=$2 n=$3 pids=() job
    shift 3
    for job in $(seq 1 "${n}"); do
        ( "${@//JOB/${job}}" ) > "${logdir}/${name}.${job}.log" 2>&1 &
        pids+=($!)
    done
    for job in $(seq 1 "${n}"); do
        if ! wait "${pids[$((job - 1))]}"; then
            tail -n 20 "${logdir}/${name}.${job}.log" >&2
            die "job ${job} failed; full log: ${logdir}/${name}.${job}.log"
        fi
    done
}
# split_keys SCP OUT_PREFIX N: round-robin split of the keys of SCP into OUT_PREFIX.{1..N}.scp.
split_keys() {
    awk -v n="$3" -v prefix="$2" '{ print > (prefix "." ((NR - 1) % n + 1) ".scp") }' "$1"
}
# aggregate_stats OUTPUT_DIR STATS_DIR...: aggregate_stats_dirs, then (as asr.sh does) append the vocabulary size to
# each text shape, giving OUTPUT_DIR/{train,valid}/text_shape.<token_type>.
aggregate_stats() {
    local output_dir=$1 inputs=() input set_name vocab_size
    shift
    for input in "$@"; do inputs+=(--input_dir "${input}"); done
    "${python}" -m espnet2.bin.aggregate_stats_dirs "${inputs[@]}" --output_dir "${output_dir}" \
        || die "aggregate_stats_dirs failed"
    vocab_size=$(wc -l < "${token_list}")
    for set_name in train valid; do
        awk -v size="${vocab_size}" '{ print $0 "," size }' "${output_dir}/${set_name}/text_shape" \
            > "${output_dir}/${set_name}/text_shape.${token_type}"
    done
}
# train_logged EXP_DIR WHAT SIGNATURE CMD...: run a trainer with its full log appended to EXP_DIR/train.log and
# condensed progress (batches, loss, ETA) on the console; on failure show the log's tail. An interrupted run with the
# same SIGNATURE (options) resumes from its last checkpoint; a run with other options is moved to
# EXP_DIR.previous first, so that training starts over instead of resuming its checkpoint.
train_logged() {
    local exp_dir=$1 what=$2 signature=$3
    shift 3
    if [ -e "${exp_dir}" ] && ! is_done "${exp_dir}/.started" "${signature}"; then
        rm -rf "${exp_dir}.previous"
        mv "${exp_dir}" "${exp_dir}.previous"
        log "${exp_dir} holds a run with other options: moved to ${exp_dir}.previous; training from scratch"
    fi
    mkdir -p "${exp_dir}"
    echo "${signature}" > "${exp_dir}/.started"
    log "full log: ${exp_dir}/train.log (an interrupted run resumes from its last checkpoint)"
    "$@" 2>&1 | tee -a "${exp_dir}/train.log" | "${python}" -m hybrid_encoders.recipes.progress \
        || { tail -n 30 "${exp_dir}/train.log" >&2; die "${what} failed; full log: ${exp_dir}/train.log"; }
}

for name in stage stop_stage nj ngpu corpus_size seed nbpe lm_text_sentences; do
    [[ "${!name}" =~ ^[0-9]+$ ]] || die "--${name} must be a non-negative integer, got '${!name}'"
done
case "${streaming}" in true|false) ;; *) die "--streaming must be true or false, got '${streaming}'" ;; esac
if [ "${streaming}" = true ]; then
    asr_config=${asr_config:-conf/train_asr_zipformer_streaming.yaml}
    inference_config=${inference_config:-conf/decode_asr_streaming.yaml}
    use_lm=${use_lm:-false}
    [ "${use_lm}" = false ] || die "--use_lm ${use_lm}: the streaming search fuses no language model; use --use_lm false"
    for chunk in ${streaming_chunks}; do
        [[ "${chunk}" =~ ^[0-9]+:[0-9]+$ ]] \
            || die "--streaming_chunks: '${chunk}' is not CHUNK:LEFT (50 Hz frames, e.g. 16:128)"
    done
fi
asr_config=${asr_config:-conf/train_asr_squeezeformer_ctc_d176.yaml}
inference_config=${inference_config:-conf/decode_asr.yaml}
use_lm=${use_lm:-true}
[ "${nj}" -ge 1 ] || die "--nj must be at least 1"
case "${token_type}" in bpe|char) ;; *) die "--token_type must be bpe or char, got '${token_type}'" ;; esac
case "${use_lm}" in true|false) ;; *) die "--use_lm must be true or false, got '${use_lm}'" ;; esac
[ -f "${asr_config}" ] || die "--asr_config ${asr_config} not found (configs: $(ls conf/train_*.yaml | tr '\n' ' '))"
[ -f "${inference_config}" ] || die "--inference_config ${inference_config} not found"
[ "${use_lm}" = false ] || [ -f "${lm_config}" ] || die "--lm_config ${lm_config} not found (or --use_lm false)"
for set_name in ${test_sets}; do
    case "${set_name}" in dev|dev_other|test|test_other) ;;
        *) die "--test_sets: unknown set '${set_name}' (dev, dev_other, test, test_other)" ;; esac
done
"${python}" -c "import espnet2, hybrid_encoders.recipes" 2> /dev/null \
    || die "${python} cannot import espnet2 and hybrid_encoders: run 'make venv' at the repository root, or
       pip install -e '.[recipes]' in your environment"
[ -n "${inference_asr_model}" ] || inference_asr_model=$("${python}" -m hybrid_encoders.recipes.averaged_model \
    "${asr_config}") || die "--asr_config ${asr_config}: cannot tell which averaged checkpoint to decode"

if [ "${token_type}" = bpe ]; then
    token_tag=bpe_unigram${nbpe}
else
    token_tag=char
fi
token_dir=data/token_list/${token_tag}
token_list=${token_dir}/tokens.txt
bpemodel=none
[ "${token_type}" = bpe ] && bpemodel=${token_dir}/bpe.model
asr_tag=${asr_tag:-$(basename "${asr_config}" .yaml | sed 's/^train_asr_//; s/^train_//')}_${token_tag}
asr_exp=exp/asr_${asr_tag}
asr_stats_dir=exp/asr_stats_${token_tag}
lm_exp=exp/$(basename "${lm_config}" .yaml | sed 's/^train_//')_${token_tag}
lm_stats_dir=exp/lm_stats_${token_tag}
inference_tag=$(basename "${inference_config}" .yaml)_$(basename "${inference_asr_model}" .pth)
[ "${use_lm}" = true ] && inference_tag+=_$(basename "${lm_exp}")_$(basename "${inference_lm}" .pth)
# decode_runs: one "SET LABEL DECODE_DIR [DECODER OPTIONS]" per decoding; stage 6 writes DECODE_DIR/text, stage 7
# scores it as LABEL. Streaming: each chunk setting chunk by chunk and simulated, plus full context (simulated only).
decode_runs=()
for set_name in ${test_sets}; do
    if [ "${streaming}" = false ]; then
        decode_runs+=("${set_name} ${set_name} ${asr_exp}/decode_${inference_tag}/${set_name}")
        continue
    fi
    for chunk in ${streaming_chunks} -1:-1; do
        chunk_size=${chunk%%:*}
        left=${chunk##*:}
        name=full_context
        [ "${chunk_size}" = -1 ] || name=$(( chunk_size * 20 ))ms_left${left}
        for mode in simulated streamed; do
            [ "${chunk_size}" = -1 ] && [ "${mode}" = streamed ] && continue  # full context cannot stream
            simulate=false
            [ "${mode}" = simulated ] && simulate=true
            options="--chunk_size ${chunk_size} --left_context_frames ${left} --simulate ${simulate}"
            decode_dir=${asr_exp}/decode_${inference_tag}_${name}_${mode}/${set_name}
            decode_runs+=("${set_name} ${set_name}_${name}_${mode} ${decode_dir} ${options}")
        done
    done
done
token_args=(--use_preprocessor true --token_type "${token_type}" --token_list "${token_list}"
            --bpemodel "${bpemodel}" --cleaner none --g2p none --non_linguistic_symbols none)
common_train_args=("${token_args[@]}" --config "${asr_config}" --frontend_conf fs=16k)
# corpus3: the grammar with free clause composition, held-out structures and disjoint splits (the audio of other
# versions is not reused).
corpus_signature="corpus3 corpus_size=${corpus_size} seed=${seed}"

if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ]; then
    banner 1 "synthesise the eSpeak NG corpus (corpus_size=${corpus_size}, seed=${seed})"
    signature=${corpus_signature}
    if is_done data/.stage1.done "${signature}"; then
        log "already done (data/.stage1.done); skipping"
    else
        "${python}" -m hybrid_encoders.recipes.synthetic_speech --data_dir data \
            --audio_dir "data/audio/corpus3_seed${seed}_size${corpus_size}" --corpus_size "${corpus_size}" \
            --seed "${seed}" --nj "${nj}" --backend "${espeak_backend}" || die "stage 1 (data) failed"
        echo "${signature}" > data/.stage1.done
    fi
fi

if [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ]; then
    banner 2 "token list (${token_tag})"
    require data/.stage1.done 1
    signature="$(cat data/.stage1.done) token=${token_tag}"
    if is_done "${token_dir}/.done" "${signature}"; then
        log "already done (${token_dir}/.done); skipping"
    elif [ "${token_type}" = bpe ]; then
        "${python}" -m hybrid_encoders.recipes.bpe --text data/train/text --nbpe "${nbpe}" --output_dir "${token_dir}" \
            || die "stage 2 (token list) failed"
        echo "${signature}" > "${token_dir}/.done"
    else
        mkdir -p "${token_dir}"
        "${python}" -m espnet2.bin.tokenize_text --token_type char --input data/train/text --output "${token_list}" \
            --field 2- --cleaner none --g2p none --write_vocabulary true \
            --add_symbol "<blank>:0" --add_symbol "<unk>:1" --add_symbol "<sos/eos>:-1" \
            || die "stage 2 (token list) failed"
        echo "${signature}" > "${token_dir}/.done"
    fi
fi

if [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ] && [ "${use_lm}" = true ]; then
    banner 3 "train the language model ${lm_exp} (config ${lm_config})"
    require data/.stage1.done 1
    require "${token_dir}/.done" 2
    # As asr.sh stages 6-7: the LM text (asr.sh's --lm_train_text: the training transcripts, then
    # --lm_text_sentences sentences of the training grammar that are in no split of the corpus), text statistics
    # (token counts per sentence), then lm_train; the dev transcripts validate it.
    # The grammar's sentences are drawn disjoint from the corpus that --corpus_size and --seed make.
    is_done data/.stage1.done "${corpus_signature}" || die "data/ was made with other options ($(cat \
        data/.stage1.done)); run stage 3 with the --corpus_size and --seed of stage 1"
    signature="$(cat "${token_dir}/.done") config=$(cksum < "${lm_config}") args=${lm_args}"
    signature+=" lm_text_sentences=${lm_text_sentences}"
    if is_done "${lm_exp}/.done" "${signature}"; then
        log "already done (${lm_exp}/.done); skipping"
    else
        rm -rf "${lm_stats_dir}"
        mkdir -p "${lm_stats_dir}/logdir"
        lm_train_text=${lm_stats_dir}/lm_train.txt
        "${python}" -m hybrid_encoders.recipes.lm_text --train_text data/train/text --output "${lm_train_text}" \
            --corpus_size "${corpus_size}" --seed "${seed}" --sentences "${lm_text_sentences}" \
            || die "stage 3 (LM text) failed"
        lm_data_args=(--train_data_path_and_name_and_type "${lm_train_text},text,text"
                      --valid_data_path_and_name_and_type data/dev/text,text,text)
        "${python}" -m espnet2.bin.lm_train --collect_stats true "${token_args[@]}" --config "${lm_config}" \
            --ngpu 0 "${lm_data_args[@]}" --train_shape_file "${lm_train_text}" --valid_shape_file data/dev/text \
            --output_dir "${lm_stats_dir}/logdir/stats.1" > "${lm_stats_dir}/logdir/stats.1.log" 2>&1 \
            || { tail -n 20 "${lm_stats_dir}/logdir/stats.1.log" >&2; die "LM statistics failed"; }
        aggregate_stats "${lm_stats_dir}" "${lm_stats_dir}/logdir/stats.1"
        # shellcheck disable=SC2086  # lm_args is a list of options
        train_logged "${lm_exp}" "LM training" "${signature}" \
            "${python}" -m espnet2.bin.lm_train "${token_args[@]}" --config "${lm_config}" --ngpu "${ngpu}" \
            --resume true --output_dir "${lm_exp}" "${lm_data_args[@]}" \
            --train_shape_file "${lm_stats_dir}/train/text_shape.${token_type}" \
            --valid_shape_file "${lm_stats_dir}/valid/text_shape.${token_type}" --fold_length 150 ${lm_args}
        require "${lm_exp}/${inference_lm}" 3
        echo "${signature}" > "${lm_exp}/.done"
    fi
fi

if [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 4 ]; then
    banner 4 "collect feature statistics (${nj} jobs)"
    require data/.stage1.done 1
    require "${token_dir}/.done" 2
    # As in asr.sh, the statistics are shared by every config: they depend only on the frontend (the same STFT and
    # 80 mel bins in all conf/train_*.yaml). Remove ${asr_stats_dir} after changing a frontend_conf.
    signature="$(cat "${token_dir}/.done")"
    if is_done "${asr_stats_dir}/.done" "${signature}"; then
        log "already done (${asr_stats_dir}/.done); skipping"
    else
        # Drop utterances whose audio is missing, empty or corrupt (a warning names each file) before any job reads it.
        "${python}" -m hybrid_encoders.recipes.kaldi_dir check data/train data/dev || die "audio check failed"
        logdir=${asr_stats_dir}/logdir
        rm -rf "${logdir}"
        mkdir -p "${logdir}"
        split_keys data/train/wav.scp "${logdir}/train" "${nj}"
        split_keys data/dev/wav.scp "${logdir}/valid" "${nj}"
        log "asr_train --collect_stats true, logs in ${logdir}/stats.*.log"
        OMP_NUM_THREADS=1 run_jobs "${logdir}" stats "${nj}" \
            "${python}" -m espnet2.bin.asr_train --collect_stats true "${common_train_args[@]}" --ngpu 0 \
            --train_data_path_and_name_and_type data/train/wav.scp,speech,sound \
            --train_data_path_and_name_and_type data/train/text,text,text \
            --valid_data_path_and_name_and_type data/dev/wav.scp,speech,sound \
            --valid_data_path_and_name_and_type data/dev/text,text,text \
            --train_shape_file "${logdir}/train.JOB.scp" --valid_shape_file "${logdir}/valid.JOB.scp" \
            --output_dir "${logdir}/stats.JOB"
        aggregate_stats "${asr_stats_dir}" $(seq -f "${logdir}/stats.%g" 1 "${nj}")
        echo "${signature}" > "${asr_stats_dir}/.done"
    fi
fi

if [ "${stage}" -le 5 ] && [ "${stop_stage}" -ge 5 ]; then
    banner 5 "train ${asr_exp} (config ${asr_config})"
    require "${asr_stats_dir}/.done" 4
    signature="$(cat "${asr_stats_dir}/.done") config=$(cksum < "${asr_config}") args=${asr_args}"
    if is_done "${asr_exp}/.done" "${signature}"; then
        log "already done (${asr_exp}/.done); skipping"
    else
        # shellcheck disable=SC2086  # asr_args is a list of options
        train_logged "${asr_exp}" training "${signature}" \
            "${python}" -m espnet2.bin.asr_train "${common_train_args[@]}" --ngpu "${ngpu}" --resume true \
            --output_dir "${asr_exp}" \
            --normalize global_mvn --normalize_conf "stats_file=${asr_stats_dir}/train/feats_stats.npz" \
            --train_data_path_and_name_and_type data/train/wav.scp,speech,sound \
            --train_data_path_and_name_and_type data/train/text,text,text \
            --train_shape_file "${asr_stats_dir}/train/speech_shape" \
            --train_shape_file "${asr_stats_dir}/train/text_shape.${token_type}" \
            --valid_data_path_and_name_and_type data/dev/wav.scp,speech,sound \
            --valid_data_path_and_name_and_type data/dev/text,text,text \
            --valid_shape_file "${asr_stats_dir}/valid/speech_shape" \
            --valid_shape_file "${asr_stats_dir}/valid/text_shape.${token_type}" \
            --fold_length 80000 --fold_length 150 ${asr_args}
        require "${asr_exp}/${inference_asr_model}" 5
        echo "${signature}" > "${asr_exp}/.done"
    fi
fi

if [ "${stage}" -le 6 ] && [ "${stop_stage}" -ge 6 ]; then
    banner 6 "decode ${test_sets} with ${inference_asr_model} (${nj} jobs)"
    require "${asr_exp}/.done" 5
    decoder_args=(-m espnet2.bin.asr_inference --batch_size 1)
    [ "${streaming}" = true ] && decoder_args=(-m hybrid_encoders.bin.asr_inference_streaming)
    lm_signature="no LM"
    if [ "${use_lm}" = true ]; then
        require "${lm_exp}/.done" 3
        decoder_args+=(--lm_train_config "${lm_exp}/config.yaml" --lm_file "${lm_exp}/${inference_lm}")
        lm_signature="LM $(cat "${lm_exp}/.done")"
    fi
    for run in "${decode_runs[@]}"; do
        read -r set_name label decode_dir run_args <<< "${run}"
        signature="$(cat "${asr_exp}/.done") ${lm_signature} inference=$(cksum < "${inference_config}")"
        signature+=" args=${inference_args}"
        [ -z "${run_args}" ] || signature+=" ${run_args}"
        if is_done "${decode_dir}/.done" "${signature}"; then
            log "${label}: already done (${decode_dir}/.done); skipping"
            continue
        fi
        "${python}" -m hybrid_encoders.recipes.kaldi_dir check "data/${set_name}" || die "audio check failed"
        logdir=${decode_dir}/logdir
        rm -rf "${logdir}"
        mkdir -p "${logdir}"
        num_utts=$(wc -l < "data/${set_name}/wav.scp")
        decode_jobs=$(( nj < num_utts ? nj : num_utts ))
        split_keys "data/${set_name}/wav.scp" "${logdir}/keys" "${decode_jobs}"
        log "${label}: ${num_utts} utterances; logs in ${logdir}/asr_inference.*.log"
        decode_start=${SECONDS}
        # Progress: both decoders log one "best hypo" line per utterance.
        ( while sleep 15; do
              done_utts=$(cat "${logdir}"/asr_inference.*.log 2> /dev/null | grep -c "best hypo" || true)
              elapsed=$(( SECONDS - decode_start ))
              [ "${done_utts}" -gt 0 ] && log "  decoded ${done_utts}/${num_utts}, ETA $(( elapsed * (num_utts - done_utts) / done_utts ))s"
          done ) &
        progress_pid=$!
        # Stop the progress loop however this script ends (a failed job exits through die).
        trap 'kill "${progress_pid}" 2> /dev/null || true' EXIT
        # shellcheck disable=SC2086  # run_args and inference_args are lists of options
        OMP_NUM_THREADS=1 run_jobs "${logdir}" asr_inference "${decode_jobs}" \
            "${python}" "${decoder_args[@]}" --ngpu "${ngpu}" \
            --data_path_and_name_and_type "data/${set_name}/wav.scp,speech,sound" --key_file "${logdir}/keys.JOB.scp" \
            --asr_train_config "${asr_exp}/config.yaml" --asr_model_file "${asr_exp}/${inference_asr_model}" \
            --output_dir "${logdir}/output.JOB" --config "${inference_config}" ${run_args} ${inference_args}
        kill "${progress_pid}" 2> /dev/null || true
        trap - EXIT
        cat "${logdir}"/output.*/1best_recog/text | sort > "${decode_dir}/text"
        log "${label}: decoded in $(( SECONDS - decode_start ))s -> ${decode_dir}/text"
        echo "${signature}" > "${decode_dir}/.done"
    done
    # Streaming: chunk by chunk must give the simulated hypotheses (the same encoder frames, fed in pieces).
    for run in "${decode_runs[@]}"; do
        read -r set_name label decode_dir _ <<< "${run}"
        [[ "${label}" == *_streamed ]] || continue
        simulated_dir=${decode_dir/_streamed\//_simulated/}
        differing=$(diff "${simulated_dir}/text" "${decode_dir}/text" | grep -c "^>" || true)
        if [ "${differing}" -gt 0 ]; then
            diff "${simulated_dir}/text" "${decode_dir}/text" | head -n 6 >&2
            die "${label}: ${differing} utterances decoded chunk by chunk differ from the simulated decoding"
        fi
        log "${label}: chunk-by-chunk hypotheses identical to the simulated ones ($(wc -l < "${decode_dir}/text") utterances)"
    done
fi

if [ "${stage}" -le 7 ] && [ "${stop_stage}" -ge 7 ]; then
    banner 7 "score and report"
    decode_args=()
    for run in "${decode_runs[@]}"; do
        read -r set_name label decode_dir _ <<< "${run}"
        require "${decode_dir}/.done" 6
        "${python}" -m hybrid_encoders.recipes.scoring --ref "data/${set_name}/text" --hyp "${decode_dir}/text" \
            --utt2spk "data/${set_name}/utt2spk" --output_dir "${decode_dir}" || die "scoring failed"
        decode_args+=(--decode_dir "${label}=${decode_dir}")
    done
    lm_description="none (--use_lm false)"
    [ "${use_lm}" = true ] && lm_description="${lm_exp}/${inference_lm} (${lm_config}), trained on data/train/text"
    [ "${streaming}" = true ] && decode_args+=(--description "streaming: the CTC branch, chunk_size:left_context_frames \
${streaming_chunks} (50 Hz frames) decoded chunk by chunk (_streamed, 100 ms audio pieces) and simulated (whole \
utterances through the chunked forward), full context simulated; chunk by chunk == simulated checked in stage 6")
    params=$(grep -m1 -o "Total Number of model parameters: [0-9.]* [KMG]" "${asr_exp}/train.log" 2> /dev/null | tail -n1 || true)
    "${python}" -m hybrid_encoders.recipes.report --exp_dir "${asr_exp}" "${decode_args[@]}" \
        --output "${asr_exp}/RESULTS.md" \
        --description "config: ${asr_config}, decoding: ${inference_config} (${inference_asr_model})" \
        --description "language model: ${lm_description}" \
        --description "corpus: eSpeak NG, corpus_size=${corpus_size}, seed=${seed}; tokens: ${token_tag}" \
        --description "model size: ${params#Total Number of model parameters: }" \
        --description "environment: $(nproc) CPU core(s), ngpu=${ngpu}, $("${python}" -c 'import espnet, torch; print("espnet", espnet.__version__, "torch", torch.__version__)')" \
        || die "report failed"
    log "results: ${asr_exp}/RESULTS.md, curves: ${asr_exp}/training_curves.png"
fi

log "finished stages ${stage}-${stop_stage} in $(( (SECONDS - recipe_start) / 60 ))m$(( (SECONDS - recipe_start) % 60 ))s"
