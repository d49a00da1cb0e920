"""Tiny random-weight ESPnet experiments (``config.yaml`` + ``model.pth``, as ``asr_train`` writes them) for the
export tests, and the PyTorch references the exported graphs are compared with."""

import pathlib

import numpy as np
import pytest
import torch
import yaml

from conftest import randomise_batch_norms

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

# characters, as the mini recipe's token lists: <space> is a token of its own
TOKENS = ["<blank>", "<unk>", "<space>", "A", "B", "C", "D", "E", "<sos/eos>"]
FEATURE_DIM = 80  # sherpa-onnx computes 80 fbank bins

ENCODERS = {
    "squeezeformer": {"output_size": 32, "attention_heads": 2, "num_blocks": 4, "cnn_module_kernel": 7},
    # nsr_mode train: the export must fold the multi-branch convolutions (deploy form)
    "hybridformer": {"output_size": 32, "attention_heads": 2, "num_blocks": 4, "cnn_module_kernel": 7,
                     "nsr_mode": "train"},
    "zipformer": {"num_encoder_layers": 1, "encoder_dim": 24, "encoder_unmasked_dim": 16, "feedforward_dim": 48,
                  "num_heads": 2, "query_head_dim": 8, "value_head_dim": 4, "pos_head_dim": 2, "pos_dim": 8,
                  "cnn_module_kernel": 7},
}
TRANSDUCER = {
    "model": "espnet_rnnt",
    "decoder": "stateless_transducer",
    "decoder_conf": {"decoder_dim": 16, "context_size": 2},
    "model_conf": {"ctc_weight": 0.3, "joint_net_conf": {"joint_space_size": 24}},
}
ATTENTION = {
    "decoder": "transformer",
    "decoder_conf": {"attention_heads": 2, "linear_units": 16, "num_blocks": 1},
    "model_conf": {"ctc_weight": 0.3},
}


def write_stats(path: pathlib.Path, dim: int = FEATURE_DIM) -> pathlib.Path:
    """A feats_stats.npz as ESPnet's collect-stats writes it (count, sum, sum_square) with a non-trivial mean/std."""
    rng = np.random.default_rng(3)
    count = 1000
    mean, std = rng.uniform(-8, 2, dim), rng.uniform(1, 4, dim)
    np.savez(path, count=count, sum=mean * count, sum_square=(std**2 + mean**2) * count)
    return path


def save_experiment(directory: pathlib.Path, encoder: str, head: str = "ctc", frontend: str = "default",
                    normalize: bool = True, seed: int = 0, **overrides) -> tuple:
    """Build a model through ESPnet's ASRTask from a config and save it like asr_train does.

    Args:
        encoder: a key of :data:`ENCODERS`.
        head: ``ctc`` (CTC only), ``attention`` (hybrid CTC/attention) or ``transducer`` (with a CTC head).
        frontend: ``default`` or ``kaldi_fbank``.
        normalize: global MVN with :func:`write_stats` statistics.
        overrides: top-level config keys replacing the built config's.

    Returns:
        (config path, model path, the eval-mode model).
    """
    from espnet2.tasks.asr import ASRTask

    directory.mkdir(parents=True, exist_ok=True)
    config = {"encoder": encoder, "encoder_conf": ENCODERS[encoder], "token_list": TOKENS,
              "input_size": None, "model_conf": {"ctc_weight": 1.0}}
    if head == "transducer":
        config.update(TRANSDUCER)
    elif head == "attention":
        config.update(ATTENTION)
    if frontend == "kaldi_fbank":
        config.update(frontend="kaldi_fbank", frontend_conf={"n_mels": FEATURE_DIM})
    else:
        config.update(frontend="default", frontend_conf={"n_fft": 512, "hop_length": 160, "n_mels": FEATURE_DIM})
    if normalize:
        config.update(normalize="global_mvn",
                      normalize_conf={"stats_file": str(write_stats(directory / "feats_stats.npz"))})
    else:
        config.update(normalize=None)  # ESPnet's default would be utterance_mvn
    config.update(overrides)
    (directory / "train.yaml").write_text(yaml.safe_dump(config))
    args = ASRTask.get_parser().parse_args(["--config", str(directory / "train.yaml"), "--output_dir", str(directory)])
    torch.manual_seed(seed)
    model = ASRTask.build_model(args)
    randomise_batch_norms(model)
    with torch.no_grad():  # never emit <unk> (sherpa-onnx decodes it as blank) and emit non-blank tokens often
        for layer in _output_layers(model):
            layer.bias[TOKENS.index("<unk>")] = -50.0  # far below the others; small enough for 1e-4 in fp32
            layer.bias[TOKENS.index("<blank>")] -= 1.0
    config_path, model_path = directory / "config.yaml", directory / "model.pth"
    config_path.write_text(yaml.safe_dump(vars(args)))
    torch.save(model.state_dict(), model_path)
    return config_path, model_path, model.eval()


def _output_layers(model):
    layers = [model.ctc.ctc_lo] if getattr(model, "ctc", None) is not None else []
    if getattr(model, "joint_network", None) is not None:
        layers.append(model.joint_network.lin_out)
    return layers


@torch.no_grad()
def pytorch_encoder(model, features: torch.Tensor, lengths: torch.Tensor):
    """ESPnet's own path from features: ``model.normalize`` (GlobalMVN) then the encoder; (N, T', D), (N,)."""
    if model.normalize is not None:
        features, lengths = model.normalize(features.clone(), lengths)
    encoded, encoded_lengths, _ = model.encoder(features, lengths)
    return encoded, encoded_lengths


def padded_features(lengths, seed: int = 0, dim: int = FEATURE_DIM):
    """(N, max(lengths), dim) random log-mel-like features (padding zero) and (N,) int64 lengths."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(len(lengths), max(lengths), dim, generator=generator) * 2 - 5
    lengths = torch.tensor(lengths, dtype=torch.int64)
    mask = torch.arange(features.size(1))[None, :] >= lengths[:, None]
    return features.masked_fill(mask.unsqueeze(-1), 0.0), lengths


# name -> (encoder, head, global MVN, seed); every system uses Kaldi fbank features (sherpa-onnx computes them too);
# the two CTC systems also a global MVN, folded into the graphs. The HybridFormer's seed: at seeds 0, 1 and 3 its random
# encoder's frames are so alike that the CTC argmax is one token for the whole utterance (whatever the head's scale),
# which would make the sherpa-onnx comparison nearly vacuous; seed 2 gives frames that differ.
SYSTEMS = {
    "squeezeformer": ("squeezeformer", "ctc", True, 0),
    "hybridformer": ("hybridformer", "attention", True, 2),
    "zipformer": ("zipformer", "transducer", False, 0),
}
_EXPORTS = {}
_ROOT = []


def exported(name: str):
    """(model, export folder) of system ``name``, built and exported once per test session (exports take minutes on
    a loaded 2-core machine). The Squeezeformer one goes through the command line, with --quantize int8."""
    if name not in _EXPORTS:
        import tempfile

        from hybrid_encoders.cli import main
        from hybrid_encoders.deploy import export_onnx

        if not _ROOT:
            _ROOT.append(pathlib.Path(tempfile.mkdtemp(prefix="hybrid_encoders_deploy_tests_")))
        encoder, head, normalize, seed = SYSTEMS[name]
        directory = _ROOT[0] / name
        config, model_path, model = save_experiment(directory, encoder, head, "kaldi_fbank", normalize, seed=seed)
        out = directory / "onnx"
        if name == "squeezeformer":
            code = main(["export", "onnx", "--config", str(config), "--model", str(model_path), "--out", str(out),
                         "--quantize", "int8"])
            assert code == 0
        else:
            export_onnx(config, model_path, out)
        _EXPORTS[name] = (model, out)
    return _EXPORTS[name]


def write_test_wavs(directory: pathlib.Path, count: int = 3, seed: int = 0) -> list:
    """16-bit 16 kHz wav files (1.1-2.3 s) of noise-modulated tones: speech-like spectra for random models."""
    import soundfile

    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        samples = int(rng.integers(17600, 36800))
        t = np.arange(samples) / 16000
        tone = sum(np.sin(2 * np.pi * f * t) for f in rng.uniform(100, 3000, 4))
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(1, 5) * t)
        audio = 0.1 * tone * envelope / 4 + 0.02 * rng.standard_normal(samples)
        path = directory / f"utt{index}.wav"
        soundfile.write(str(path), audio.astype(np.float32), 16000, subtype="PCM_16")
        paths.append(path)
    return paths


@torch.no_grad()
def pytorch_greedy(model, wav_path) -> list:
    """Greedy token ids of one wav file by the PyTorch model: ESPnet's own ``encode`` (frontend, normalisation,
    encoder), then ESPnet's transducer greedy search (``BeamSearchTransducer``, beam 1) or CTC argmax with repeats
    merged and blanks removed."""
    import itertools

    import soundfile
    from espnet2.asr.transducer.beam_search_transducer import BeamSearchTransducer

    audio, _ = soundfile.read(str(wav_path), dtype="float32")
    speech = torch.from_numpy(audio)[None]
    encoded, _ = model.encode(speech, torch.tensor([speech.size(1)]))
    if getattr(model, "joint_network", None) is not None:
        search = BeamSearchTransducer(model.decoder, model.joint_network, beam_size=1)
        return [int(token) for token in search(encoded[0])[0].yseq[1:]]
    best = model.ctc.argmax(encoded)[0].tolist()
    return [token for token, _ in itertools.groupby(best) if token != 0]


def evaluate_report(out: str):
    """The header line and the per-runtime rows that ``hybrid_encoders.deploy.evaluate`` printed to ``out``, after
    whatever ESPnet printed before them."""
    lines = out.strip().splitlines()
    header, *rows = lines[next(i for i, line in enumerate(lines) if " utterances, " in line) :]
    return header, rows
