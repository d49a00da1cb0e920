"""``model: espnet_rnnt``: its losses against the loss functions, its step counter, its configuration errors, and a
tiny run through ESPnet's ``asr_train`` (collect stats, train) and ``asr_inference``."""

import re

import pytest
import torch
import yaml
from conftest import REPO_ROOT, asr_train_arguments, run_espnet as espnet, write_random_corpus as write_corpus

from espnet2.asr.ctc import CTC
from espnet2.asr.decoder.transducer_decoder import TransducerDecoder
from espnet2.asr.decoder.transformer_decoder import TransformerDecoder
from espnet2.asr.encoder.conformer_encoder import ConformerEncoder
from espnet2.asr_transducer.joint_network import JointNetwork
from espnet2.asr_transducer.utils import get_transducer_task_io
from hybrid_encoders.transducer.model import TransducerASRModel
from hybrid_encoders.transducer.rnnt_loss import rnnt_loss
from hybrid_encoders.transducer.stateless_decoder import StatelessTransducerDecoder

TOKENS = ["<blank>", "<unk>", "a", "b", "c", "d", "<sos/eos>"]
VOCAB = len(TOKENS)


def build(decoder="stateless", joint_network=None, **model_conf):
    torch.manual_seed(0)
    encoder = ConformerEncoder(
        input_size=20, output_size=16, attention_heads=2, linear_units=32, num_blocks=1, input_layer="conv2d"
    )
    if decoder == "stateless":
        decoder = StatelessTransducerDecoder(VOCAB, 16, decoder_dim=8)
        model_conf.setdefault("joint_net_conf", {"joint_space_size": 12})
    elif decoder == "rnn":
        decoder = TransducerDecoder(VOCAB, hidden_size=8)
        joint_network = JointNetwork(VOCAB, 16, 8, joint_space_size=12)
    return TransducerASRModel(
        vocab_size=VOCAB, token_list=TOKENS, frontend=None, specaug=None, normalize=None, preencoder=None,
        encoder=encoder, postencoder=None, decoder=decoder, ctc=CTC(VOCAB, 16), joint_network=joint_network,
        **model_conf,
    )


def batch():
    generator = torch.Generator().manual_seed(5)
    speech = torch.randn(3, 60, 20, generator=generator)
    text = torch.tensor([[2, 3, 4, 5], [3, 3, -1, -1], [5, -1, -1, -1]])
    return speech, torch.tensor([60, 48, 33]), text, torch.tensor([4, 2, 1])


def full_loss_by_hand(model, speech, speech_lengths, text):
    encoder_out, encoder_out_lens = model.encode(speech, speech_lengths)
    decoder_in, target, t_len, u_len = get_transducer_task_io(text, encoder_out_lens, ignore_id=-1, blank_id=0)
    logits = model.joint_network(encoder_out.unsqueeze(2), model.decoder(decoder_in).unsqueeze(1))
    return rnnt_loss(logits, target, t_len, u_len)


@pytest.mark.parametrize("decoder", ["stateless", "rnn"])
def test_full_loss_is_torchaudio_rnnt_plus_weighted_ctc(decoder):
    model = build(decoder, ctc_weight=0.3).eval()
    speech, speech_lengths, text, text_lengths = batch()
    with torch.no_grad():
        loss, stats, weight = model(speech, speech_lengths, text.clone(), text_lengths)
        expected = full_loss_by_hand(model, speech, speech_lengths, text)
    assert stats["loss_transducer"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss.item() == pytest.approx(expected.item() + 0.3 * stats["loss_ctc"].item(), rel=1e-5)
    assert int(weight) == 3
    assert 0.0 <= float(stats["cer_transducer"]) and stats["wer_transducer"] is not None


def _edit_distance(a, b):
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


def test_validation_reports_the_ctc_heads_cer_or_nothing():
    model = build(ctc_weight=0.3).eval()
    speech, speech_lengths, text, text_lengths = batch()
    with torch.no_grad():
        _, stats, _ = model(speech, speech_lengths, text.clone(), text_lengths)
        encoder_out, encoder_out_lens = model.encode(speech, speech_lengths)
        best = model.ctc.argmax(encoder_out)
    errors = reference_chars = 0
    for path, reference, reference_length in zip(best.tolist(), text.tolist(), text_lengths.tolist()):
        # greedy CTC (merge repeats, drop blanks) over the whole padded path, compared as strings of token
        # spellings, the way ESPnet's ErrorCalculator scores it
        hypothesis = "".join(TOKENS[t] for i, t in enumerate(path) if t != 0 and (i == 0 or t != path[i - 1]))
        truth = "".join(TOKENS[t] for t in reference[:reference_length])
        errors += _edit_distance(hypothesis, truth)
        reference_chars += len(truth)
    assert float(stats["cer_ctc"]) == pytest.approx(errors / reference_chars)
    with torch.no_grad():
        _, stats, _ = build(ctc_weight=0.3, report_cer=False, report_wer=False).eval()(*batch())
    assert "cer_ctc" not in stats  # never computed, so not reported as nan


def test_pruned_loss_with_whole_lattice_range_and_no_simple_weight_equals_full_loss():
    model = build(
        ctc_weight=0.0, transducer_loss="pruned", prune_range=10, simple_loss_scale=0.0, simple_loss_warmup_steps=0
    ).eval()
    speech, speech_lengths, text, text_lengths = batch()
    with torch.no_grad():
        loss, stats, _ = model(speech, speech_lengths, text.clone(), text_lengths)
        expected = full_loss_by_hand(model, speech, speech_lengths, text)
    assert stats["loss_pruned"].item() == pytest.approx(expected.item(), rel=1e-4)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    assert stats["loss_simple"].item() > 0


def test_pruned_training_step_updates_joint_decoder_and_simple_projections():
    model = build(ctc_weight=0.3, transducer_loss="pruned", prune_range=2)
    speech, speech_lengths, text, text_lengths = batch()
    loss, _, _ = model(speech, speech_lengths, text.clone(), text_lengths)
    loss.backward()
    for name in ("joint_network.lin_out.weight", "decoder.conv.weight", "simple_am_proj.weight", "simple_lm_proj.weight",
                 "encoder.encoders.0.feed_forward.w_1.weight", "ctc.ctc_lo.weight"):
        gradient = dict(model.named_parameters())[name].grad
        assert gradient is not None and gradient.abs().sum() > 0, name


def test_optimizer_updates_are_counted_and_drive_icefall_warm_up():
    model = build(transducer_loss="pruned", simple_loss_scale=0.5, simple_loss_warmup_steps=4).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    unrelated_parameter = torch.nn.Parameter(torch.zeros(1))
    unrelated = torch.optim.SGD([unrelated_parameter], lr=0.1)
    expected_scales = [(1.0, 0.1), (0.875, 0.325), (0.75, 0.55), (0.625, 0.775), (0.5, 1.0), (0.5, 1.0)]
    for step, (simple, pruned) in enumerate(expected_scales):
        for _ in range(2):  # two forwards per update, as with accum_grad: 2
            loss, _, _ = model(*batch())
            loss.backward()
            assert int(model.num_updates) == step  # updates taken before this forward
            assert model.loss_scales() == pytest.approx((simple, pruned))
        optimizer.step()
        unrelated_parameter.grad = torch.ones(1)
        unrelated.step()
    assert model.num_updates.dtype == torch.int64
    assert "num_updates" in model.state_dict()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"transducer_loss": "k2"}, "model_conf.transducer_loss must be one of"),
        ({"prune_range": 1}, "model_conf.prune_range must be an integer >= 2"),
        ({"lm_scale": 0.9, "am_scale": 0.2}, "model_conf.lm_scale and am_scale"),
        ({"simple_loss_warmup_steps": -1}, "model_conf.simple_loss_warmup_steps"),
        ({"decoder": "rnn", "joint_net_conf": {"joint_space_size": 8}}, "top-level joint_net_conf"),
        ({"decoder": None}, "needs a transducer decoder"),
        ({"decoder": TransformerDecoder(VOCAB, 16)}, "without dunits"),
        ({"decoder": StatelessTransducerDecoder(VOCAB, 16, decoder_dim=8, blank_id=2)}, "set decoder_conf.blank_id: 0"),
        ({"transducer_multi_blank_durations": [2]}, "transducer_multi_blank_durations is not supported"),
    ],
)
def test_bad_configuration_names_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build(**kwargs)


@pytest.mark.slow
def test_asr_train_and_asr_inference_with_stateless_decoder_and_pruned_loss(tmp_path):
    train, valid = write_corpus(tmp_path / "train", 8, seed=0), write_corpus(tmp_path / "valid", 2, seed=1)
    (tmp_path / "tokens.txt").write_text("\n".join(TOKENS) + "\n")
    config = {
        "frontend_conf": {"n_fft": 512, "hop_length": 160, "n_mels": 20},
        "encoder": "conformer",
        "encoder_conf": {"output_size": 16, "attention_heads": 2, "linear_units": 32, "num_blocks": 1, "input_layer": "conv2d"},
        "decoder": "stateless_transducer",
        "decoder_conf": {"decoder_dim": 16, "context_size": 2},
        "model": "espnet_rnnt",
        "model_conf": {
            "ctc_weight": 0.3, "transducer_loss": "pruned", "prune_range": 3, "simple_loss_warmup_steps": 0,
            "joint_net_conf": {"joint_space_size": 16},
        },
        "optim": "adam", "optim_conf": {"lr": 0.01},
        "max_epoch": 2, "batch_type": "unsorted", "batch_size": 2, "num_workers": 0,
        "best_model_criterion": [["valid", "loss", "min"]], "keep_nbest_models": 1, "seed": 0,
    }
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    common = asr_train_arguments(train, valid)
    espnet("asr_train", *common, "--collect_stats", "true", "--output_dir", "stats",
           "--train_shape_file", f"{train}/wav.scp", "--valid_shape_file", f"{valid}/wav.scp", cwd=tmp_path)
    log = espnet("asr_train", *common, "--output_dir", "exp",
                 "--normalize", "global_mvn", "--normalize_conf", "stats_file=stats/train/feats_stats.npz",
                 "--train_shape_file", "stats/train/speech_shape", "--valid_shape_file", "stats/valid/speech_shape",
                 cwd=tmp_path)
    train_losses = [float(x) for x in re.findall(r"epoch results: \[train\].*?, loss=([0-9.e+-]+)", log)]
    assert len(train_losses) == 2, log[-3000:]
    assert train_losses[1] < train_losses[0]
    assert "loss_pruned=" in log and "loss_simple=" in log
    checkpoint = torch.load(tmp_path / "exp" / "checkpoint.pth", map_location="cpu", weights_only=False)  # our own file
    # 2 epochs x 4 updates; the saved count includes the update after the last forward (exact resume)
    assert int(checkpoint["model"]["num_updates"]) == 8

    espnet("asr_inference", "--asr_train_config", "exp/config.yaml", "--asr_model_file", "exp/valid.loss.best.pth",
           "--data_path_and_name_and_type", f"{valid}/wav.scp,speech,sound", "--output_dir", "decode",
           "--beam_size", "3", "--ngpu", "0", cwd=tmp_path)
    hypotheses = (tmp_path / "decode" / "1best_recog" / "token").read_text().splitlines()
    assert sorted(line.split()[0] for line in hypotheses) == ["valid00", "valid01"]
    for line in hypotheses:
        assert set(line.split()[1:]) <= set(TOKENS[1:-1])


@pytest.mark.parametrize("name", ["zipformer_m_pruned_rnnt", "conformer_rnnt"])
def test_example_configs_build_through_espnet(name, tmp_path):
    from espnet2.tasks.abs_task import optim_classes, scheduler_classes
    from espnet2.tasks.asr import ASRTask

    (tmp_path / "tokens.txt").write_text("\n".join(TOKENS) + "\n")
    config = REPO_ROOT / "conf" / "transducer" / f"{name}.yaml"
    args = ASRTask.get_parser().parse_args(["--config", str(config), "--token_list", str(tmp_path / "tokens.txt")])
    model = ASRTask.build_model(args)
    assert isinstance(model, TransducerASRModel) and model.use_transducer_decoder
    optimizer = optim_classes[args.optim](model.parameters(), **args.optim_conf)
    scheduler_classes[args.scheduler](optimizer, **args.scheduler_conf)
    speech = torch.randn(1, 16000)
    with torch.no_grad():
        model.eval()
        _, stats, _ = model(speech, torch.tensor([16000]), torch.tensor([[2, 3]]), torch.tensor([2]))
    assert torch.isfinite(stats["loss"]).all()
