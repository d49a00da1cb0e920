"""``python -m hybrid_encoders.bin.asr_inference_streaming``: asr_inference's output layout, chunk-by-chunk ==
simulated, batches, bad input. In-process on the stand-in causal model of ``test_recognizer``; the slow test at
the end trains a tiny causal Zipformer with ``espnet2.bin.asr_train`` and decodes it through the module."""

import argparse

import numpy as np
import pytest
import soundfile

import hybrid_encoders.bin.asr_inference_streaming as entry
from test_recognizer import TOKENS, make_model, waveform
from streaming_testing import one_thread  # noqa: F401 (autouse fixture)


def write_scp(directory, lengths, rate=16000):
    lines = []
    for index, seconds in enumerate(lengths):
        path = directory / f"utt{index}.wav"
        soundfile.write(str(path), waveform(seconds, index).numpy(), rate)
        lines.append(f"utt{index} {path}")
    (directory / "wav.scp").write_text("\n".join(lines) + "\n")
    return directory / "wav.scp"


def read_kaldi(path):
    return dict((line.split(" ", 1) + [""])[:2] for line in path.read_text().splitlines())


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    """The entry point's model loader returns the stand-in (characters) whatever the files."""
    def use(**options):
        model = make_model(tmp_path, **options)
        monkeypatch.setattr(entry, "load_model", lambda *_: (model, argparse.Namespace(token_type="char", bpemodel=None)))
        return model
    return use


def run(tmp_path, scp, output, *options):
    return entry.main([
        "--asr_train_config", "config.yaml", "--asr_model_file", "model.pth", "--output_dir", str(tmp_path / output),
        "--data_path_and_name_and_type", f"{scp},speech,sound", *map(str, options),
    ])


def test_chunk_by_chunk_writes_asr_inference_layout_equal_to_simulated(tmp_path, stand_in):
    stand_in(transducer=True)
    scp = write_scp(tmp_path, [1.7, 0.9, 2.2, 0.004, 1.1])  # utt3 (64 samples) is too short for one frame
    keys = tmp_path / "keys.scp"
    keys.write_text("utt4 x\nutt0 x\nutt2 x\nutt3 x\n")
    common = ["--key_file", keys, "--decoding_method", "modified_beam_search", "--beam_size", 3, "--nbest", 2]
    assert run(tmp_path, scp, "streamed", *common, "--batch_size", 3, "--piece_ms", 130) == 0
    assert run(tmp_path, scp, "simulated", *common, "--simulate", "true") == 0
    for n in (1, 2):
        streamed, simulated = tmp_path / "streamed" / f"{n}best_recog", tmp_path / "simulated" / f"{n}best_recog"
        assert sorted(p.name for p in streamed.iterdir()) == ["score", "text", "token", "token_int"]
        assert read_kaldi(streamed / "text") == read_kaldi(simulated / "text")
        assert read_kaldi(streamed / "token_int") == read_kaldi(simulated / "token_int")
        assert list(read_kaldi(streamed / "text")) == ["utt4", "utt0", "utt2", "utt3"]  # key-file order
    text, token, token_int = (read_kaldi(tmp_path / "streamed" / "1best_recog" / name) for name in ("text", "token", "token_int"))
    assert text["utt3"] == "" and token_int["utt3"] == ""  # too short: empty hypothesis, as asr_inference
    for key in ("utt0", "utt2", "utt4"):
        ids = [int(i) for i in token_int[key].split()]
        assert len(ids) >= 2 and token[key].split() == [TOKENS[i] for i in ids]
        assert text[key] == "".join(TOKENS[i] for i in ids).replace("<space>", " ")
    scores = read_kaldi(tmp_path / "streamed" / "1best_recog" / "score")
    simulated_scores = read_kaldi(tmp_path / "simulated" / "1best_recog" / "score")
    assert [float(scores[k]) for k in scores] == pytest.approx([float(simulated_scores[k]) for k in scores], abs=1e-3)


def test_config_file_options_and_ctc_default(tmp_path, stand_in):
    stand_in()
    scp = write_scp(tmp_path, [1.0, 1.4])
    config = tmp_path / "decode.yaml"
    config.write_text("decoding_method: ctc_prefix_beam\nbeam_size: 2\nbatch_size: 2\npiece_ms: 10\n")
    assert run(tmp_path, scp, "out", "--config", config) == 0
    assert run(tmp_path, scp, "greedy", "--simulate", "true") == 0  # default for a CTC model: ctc_greedy
    assert set(read_kaldi(tmp_path / "out" / "1best_recog" / "text")) == {"utt0", "utt1"}


@pytest.mark.parametrize(
    "options,message",
    [
        (["--lm_file", "lm.pth"], "streaming search fuses no language model"),
        (["--decoding_method", "rnnt_greedy"], "needs a transducer"),
        (["--nbest", 2], "--nbest 2 needs a beam search, not ctc_greedy"),
        (["--chunk_size", -1], "full context can only be simulated"),
        (["--key_file", "KEYS"], "utterance nope is not in"),
    ],
)
def test_bad_options_stop_with_a_clear_error(tmp_path, stand_in, capsys, options, message):
    stand_in()
    scp = write_scp(tmp_path, [0.5])
    (tmp_path / "keys").write_text("nope x\n")
    options = [str(tmp_path / "keys") if option == "KEYS" else option for option in options]
    assert run(tmp_path, scp, "out", *options) == 2
    assert message in capsys.readouterr().err


def test_wrong_sample_rate_and_non_causal_model_are_rejected(tmp_path, stand_in, capsys):
    stand_in()
    scp = write_scp(tmp_path, [0.5], rate=8000)
    assert run(tmp_path, scp, "out") == 2
    assert "utterance utt0: audio at 8000 Hz, but the model's front end expects 16000 Hz" in capsys.readouterr().err
    stand_in(causal=False)
    assert run(tmp_path, scp, "out") == 2
    assert "is not causal" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_causal_zipformer_trained_by_asr_train_streams_as_simulated(tmp_path, monkeypatch):
    """A tiny causal Zipformer transducer (with a CTC branch) trained one epoch by ``espnet2.bin.asr_train``, decoded
    by the module chunk by chunk and simulated: the same text. One epoch teaches the model to emit blanks only, so
    the blank's output bias is lowered by 4 in a copy of the model file: hypotheses are then non-empty, and as
    sensitive to the encoder frames as a trained model's."""
    import torch
    import yaml

    from conftest import asr_train_arguments, run_espnet, write_random_corpus

    train, valid = write_random_corpus(tmp_path / "train", 8, seed=0), write_random_corpus(tmp_path / "valid", 3, seed=1)
    (tmp_path / "tokens.txt").write_text("\n".join(["<blank>", "<unk>", "a", "b", "c", "d", "<sos/eos>"]) + "\n")
    config = {
        "frontend_conf": {"n_fft": 512, "win_length": 400, "hop_length": 160},
        "encoder": "zipformer",
        "encoder_conf": {
            "num_encoder_layers": 1, "downsampling_factor": [1, 2, 2], "encoder_dim": 32, "encoder_unmasked_dim": 32,
            "feedforward_dim": 48, "num_heads": 2, "cnn_module_kernel": 7, "causal": True,
            "chunk_size": [8, 16], "left_context_frames": [32], "decode_chunk_size": 8,
        },
        "decoder": "stateless_transducer", "decoder_conf": {"decoder_dim": 16, "context_size": 2},
        "model": "espnet_rnnt",
        "model_conf": {"ctc_weight": 0.3, "transducer_loss": "pruned", "prune_range": 3, "joint_net_conf": {"joint_space_size": 16}},
        "optim": "adam", "optim_conf": {"lr": 0.002},
        "max_epoch": 1, "batch_type": "unsorted", "batch_size": 4, "num_workers": 0,
        "best_model_criterion": [["valid", "loss", "min"]], "keep_nbest_models": 1, "seed": 0,
    }
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    common = asr_train_arguments(train, valid)
    run_espnet("asr_train", *common, "--collect_stats", "true", "--output_dir", "stats",
               "--train_shape_file", f"{train}/wav.scp", "--valid_shape_file", f"{valid}/wav.scp", cwd=tmp_path)
    run_espnet("asr_train", *common, "--output_dir", "exp", "--normalize", "global_mvn",
               "--normalize_conf", "stats_file=stats/train/feats_stats.npz",
               "--train_shape_file", "stats/train/speech_shape", "--valid_shape_file", "stats/valid/speech_shape",
               cwd=tmp_path)
    state = torch.load(tmp_path / "exp" / "valid.loss.best.pth", map_location="cpu")
    state["joint_network.lin_out.bias"][0] -= 4.0
    state["ctc.ctc_lo.bias"][0] -= 4.0
    torch.save(state, tmp_path / "exp" / "emitting.pth")

    monkeypatch.chdir(tmp_path)  # the config's paths (statistics, token list) are relative, as ESPnet writes them
    texts = {}
    for method in ("modified_beam_search", "ctc_prefix_beam"):
        for mode, options in (("streamed", ["--batch_size", "2", "--piece_ms", "70"]), ("simulated", ["--simulate", "true"])):
            output = tmp_path / f"decode_{method}_{mode}"
            assert entry.main([
                "--asr_train_config", str(tmp_path / "exp" / "config.yaml"), "--asr_model_file",
                str(tmp_path / "exp" / "emitting.pth"), "--output_dir", str(output),
                "--data_path_and_name_and_type", f"{valid}/wav.scp,speech,sound", "--decoding_method", method,
                "--chunk_size", "16", "--left_context_frames", "32", *options,
            ]) == 0
            texts[method, mode] = read_kaldi(output / "1best_recog" / "text")
        assert texts[method, "streamed"] == texts[method, "simulated"]
        assert sorted(texts[method, "streamed"]) == ["valid00", "valid01", "valid02"]
        assert all(len(text) >= 2 for text in texts[method, "streamed"].values()), texts
