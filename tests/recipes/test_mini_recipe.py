"""egs/mini/asr1/run.sh end to end on a tiny corpus, plus its option and stage-order errors."""

import os
import re
import shutil
import subprocess
import sys

import pytest

RECIPE = os.path.join(os.path.dirname(__file__), "..", "..", "egs", "mini", "asr1")


def _copy_recipe(tmp_path):
    """A copy of the recipe directory without its data/ and exp/ (the run writes into its own directory)."""
    target = tmp_path / "asr1"
    shutil.copytree(RECIPE, target, ignore=shutil.ignore_patterns("data", "exp"))
    return target


def _run(recipe, *options, timeout=600):
    return subprocess.run(["bash", str(recipe / "run.sh"), "--python", sys.executable, *options],
                          capture_output=True, text=True, timeout=timeout)


def test_stage_before_its_inputs_says_what_to_run(tmp_path):
    recipe = _copy_recipe(tmp_path)
    result = _run(recipe, "--stage", "5")
    assert result.returncode != 0
    assert "exp/asr_stats_char/.done is missing: it is made by stage 4; run ./run.sh --stage 4 first" \
        in result.stderr


@pytest.mark.parametrize("options, message", [
    (["--no_such_option", "1"], "unknown option --no_such_option"),
    (["--nj", "two"], "--nj must be a non-negative integer"),
    (["--lm_text_sentences", "-5"], "--lm_text_sentences must be a non-negative integer"),
    (["--token_type", "word"], "--token_type must be bpe or char"),
    (["--use_lm", "yes"], "--use_lm must be true or false"),
    (["--lm_config", "conf/missing_lm.yaml"], "--lm_config conf/missing_lm.yaml not found"),
    (["--asr_config", "conf/missing.yaml"], "--asr_config conf/missing.yaml not found"),
    (["--test_sets", "test eval"], "--test_sets: unknown set 'eval' (dev, dev_other, test, test_other)"),
    (["--streaming", "yes"], "--streaming must be true or false"),
    (["--streaming", "true", "--use_lm", "true"], "--use_lm true: the streaming search fuses no language model"),
    (["--streaming", "true", "--streaming_chunks", "16:128 640ms"], "--streaming_chunks: '640ms' is not CHUNK:LEFT"),
    # --streaming true trains conf/train_asr_zipformer_streaming.yaml by default
    (["--streaming", "true", "--stage", "6"], "exp/asr_zipformer_streaming_char/.done is missing: it is made by stage 5"),
])
def test_bad_options_are_named(tmp_path, options, message):
    result = _run(_copy_recipe(tmp_path), *options)
    assert result.returncode != 0
    assert message in result.stderr


@pytest.mark.slow
def test_whole_recipe_on_a_tiny_corpus(tmp_path):
    recipe = _copy_recipe(tmp_path)
    options = ["--corpus_size", "44", "--token_type", "bpe", "--nbpe", "40", "--nj", "2",
               "--asr_args", "--max_epoch 1 --batch_size 8", "--lm_args", "--max_epoch 1", "--lm_text_sentences", "20",
               "--inference_args", "--beam_size 1 --maxlenratio 0.3"]
    result = _run(recipe, *options)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for stage in range(1, 8):
        assert f"Stage {stage}:" in result.stdout
    assert "[train] epoch 1/1 started" in result.stdout
    exp = recipe / "exp" / "asr_squeezeformer_ctc_d176_bpe_unigram40"  # the default config
    lm_exp = recipe / "exp" / "lm_bpe_unigram40"
    # the default config selects models on the validation loss (it has no attention decoder)
    decode = exp / "decode_decode_asr_valid.loss.ave_lm_bpe_unigram40_valid.loss.ave" / "test"
    for path in [recipe / "data" / split / name for split in ("train", "dev", "test")
                 for name in ("wav.scp", "text", "utt2spk", "spk2utt")] + [
            recipe / "data" / "manifests" / "mini_supervisions_train.jsonl.gz",
            recipe / "data" / "token_list" / "bpe_unigram40" / "bpe.model",
            recipe / "exp" / "asr_stats_bpe_unigram40" / "train" / "feats_stats.npz",
            recipe / "exp" / "asr_stats_bpe_unigram40" / "train" / "text_shape.bpe",
            recipe / "exp" / "lm_stats_bpe_unigram40" / "train" / "text_shape.bpe",
            lm_exp / "config.yaml", lm_exp / "valid.loss.ave.pth",
            exp / "config.yaml", exp / "valid.loss.ave.pth", decode / "text",
            decode / "score_wer" / "alignments.txt", exp / "RESULTS.md", exp / "training_curves.png"]:
        assert path.exists(), path
    num_test = len((recipe / "data" / "test" / "wav.scp").read_text().splitlines())
    results = (exp / "RESULTS.md").read_text()
    match = re.search(r"\|test\|(\d+)\|(\d+)\|[\d.]+\|[\d.]+\|[\d.]+\|[\d.]+\|([\d.]+)\|", results)
    assert match and int(match.group(1)) == num_test
    assert float(match.group(3)) >= 0.0
    assert "language model: exp/lm_bpe_unigram40/valid.loss.ave.pth" in results
    # The LM text: the training transcripts, then 20 grammar sentences.
    train_lines = (recipe / "data" / "train" / "text").read_text().splitlines()
    lm_lines = (recipe / "exp" / "lm_stats_bpe_unigram40" / "lm_train.txt").read_text().splitlines()
    assert lm_lines[:len(train_lines)] == train_lines and len(lm_lines) == len(train_lines) + 20
    decode_log = (decode / "logdir" / "asr_inference.1.log").read_text()
    assert "--lm_file exp/lm_bpe_unigram40/valid.loss.ave.pth" in decode_log

    # Every stage is a no-op the second time.
    again = _run(recipe, *options)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("already done") == 7  # stages 1-5, decoding of test and test_other

    # Without the LM: stage 3 is skipped and the decoding goes to its own directory.
    no_lm = _run(recipe, *options, "--stage", "3", "--use_lm", "false")
    assert no_lm.returncode == 0, no_lm.stderr[-3000:]
    assert "Stage 3:" not in no_lm.stdout
    no_lm_decode = exp / "decode_decode_asr_valid.loss.ave" / "test"
    assert (no_lm_decode / "text").exists()
    assert "--lm_file" not in (no_lm_decode / "logdir" / "asr_inference.1.log").read_text()

    # Other options train again from scratch (the earlier run is kept aside), instead of resuming its checkpoint.
    options[options.index("--lm_text_sentences") + 1] = "10"
    retrained = _run(recipe, *options, "--stage", "3", "--stop_stage", "3")
    assert retrained.returncode == 0, retrained.stderr[-3000:]
    assert "exp/lm_bpe_unigram40 holds a run with other options: moved to exp/lm_bpe_unigram40.previous" \
        in retrained.stdout
    assert "[train] epoch 1/1 started" in retrained.stdout
    assert (recipe / "exp" / "lm_bpe_unigram40.previous" / "valid.loss.ave.pth").exists()
    lm_lines = (recipe / "exp" / "lm_stats_bpe_unigram40" / "lm_train.txt").read_text().splitlines()
    assert len(lm_lines) == len(train_lines) + 10

    # The LM text is drawn disjoint from the corpus of stage 1's options: stage 3 refuses others.
    other_seed = _run(recipe, *options, "--stage", "3", "--stop_stage", "3", "--seed", "5")
    assert other_seed.returncode != 0
    assert "run stage 3 with the --corpus_size and --seed of stage 1" in other_seed.stderr
    assert "language model: none" in (exp / "RESULTS.md").read_text()
