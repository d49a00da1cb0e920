"""``model: espnet_crctc``: the training loss against a computation by hand (two views, per-utterance CTC, per-frame
KL), eval mode equal to ESPnet's own model, gradients, warm-up, configuration errors, and a tiny run through ESPnet's
``asr_train`` and ``asr_inference``."""

import re

import pytest
import torch
import yaml
from conftest import asr_train_arguments, run_espnet, write_random_corpus
from crctc_tiny import TOKENS, batch, encode_views_by_hand, modules

from espnet2.asr.espnet_model import ESPnetASRModel
from hybrid_encoders.crctc.model import CRCTCASRModel


def build(decoder=None, **model_conf):
    model_conf.setdefault("ctc_weight", 1.0 if decoder is None else 0.3)
    return CRCTCASRModel(**modules(decoder), **model_conf)


def ctc_and_cr_by_hand(model, encoder_out, encoder_out_lens):
    """Per-utterance CTC averaged over the 2B rows, and the per-frame KL of each view against the other, averaged over
    the B utterances."""
    _, _, text, text_lengths = batch()
    log_probs = model.ctc.log_softmax(encoder_out).detach().double()
    rows, utterances = encoder_out.size(0), encoder_out.size(0) // 2
    ctc, cr = 0.0, 0.0
    for row in range(rows):
        frames, labels = int(encoder_out_lens[row]), text[row % utterances, : text_lengths[row % utterances]]
        ctc += torch.nn.functional.ctc_loss(
            log_probs[row, :frames].unsqueeze(1), labels.unsqueeze(0), [frames], [len(labels)], reduction="sum"
        ).item()
        other = (row + utterances) % rows
        for frame in range(frames):
            target = log_probs[other, frame].exp()
            cr += (target * (target.log() - log_probs[row, frame])).sum().item()
    return ctc / rows, cr / rows


def test_ctc_training_loss_is_the_mean_ctc_of_the_two_views_plus_the_weighted_kl():
    model = build(cr_loss_scale=0.3, cr_loss_warmup_steps=0).train()
    torch.manual_seed(11)
    loss, stats, weight = model(*batch())
    ctc, cr = ctc_and_cr_by_hand(model, *encode_views_by_hand(model, seed=11))
    assert stats["loss_ctc"].item() == pytest.approx(ctc, rel=1e-5)
    assert stats["loss_cr"].item() == pytest.approx(cr, rel=1e-5)
    assert loss.item() == pytest.approx(ctc + 0.3 * cr, rel=1e-5)
    assert stats["loss"].item() == pytest.approx(loss.item())
    assert int(weight) == 3  # the utterances, not the 2B rows


def test_attention_decoder_loss_is_averaged_over_the_two_views():
    model = build("transformer", ctc_weight=0.3, cr_loss_scale=0.1, cr_loss_warmup_steps=0).train()
    torch.manual_seed(12)
    loss, stats, _ = model(*batch())
    encoder_out, encoder_out_lens = encode_views_by_hand(model, seed=12)
    _, _, text, text_lengths = batch()
    per_view = [
        model._calc_att_loss(encoder_out[rows], encoder_out_lens[rows], text.clone(), text_lengths.clone())[0].item()
        for rows in (slice(0, 3), slice(3, 6))
    ]
    assert stats["loss_att"].item() == pytest.approx(sum(per_view) / 2, rel=1e-5)
    ctc, cr = ctc_and_cr_by_hand(model, encoder_out, encoder_out_lens)
    assert loss.item() == pytest.approx(0.3 * ctc + 0.7 * stats["loss_att"].item() + 0.1 * cr, rel=1e-5)


def test_training_encoder_sees_two_different_views_and_eval_is_espnet_unchanged():
    model = build("transformer", cr_loss_scale=0.2)
    inputs = []
    model.encoder.register_forward_hook(lambda module, args, output: inputs.append(args[0]))
    model.train()(*batch())
    assert inputs[-1].shape == (6, 60, 20)
    assert not torch.equal(inputs[-1][:3], inputs[-1][3:])

    reference = ESPnetASRModel(**modules("transformer"), ctc_weight=0.3)
    missing, unexpected = reference.load_state_dict(model.state_dict(), strict=False)  # BatchNorm statistics too
    assert missing == [] and unexpected == ["num_updates"]
    model.eval(), reference.eval()
    with torch.no_grad():
        ours, ours_stats, ours_weight = model(*batch())
        theirs, theirs_stats, _ = reference(*batch())
        assert inputs[-1].shape == (3, 60, 20)
        assert torch.equal(ours, theirs) and int(ours_weight) == 3
        assert "loss_cr" not in ours_stats and ours_stats.keys() == theirs_stats.keys()
        speech, speech_lengths, _, _ = batch()
        assert torch.equal(model.encode(speech, speech_lengths)[0], reference.encode(speech, speech_lengths)[0])


def test_cr_loss_scale_zero_trains_exactly_as_espnet():
    model = build(cr_loss_scale=0.0).train()
    reference = ESPnetASRModel(**modules(), ctc_weight=1.0).train()
    torch.manual_seed(13)
    ours, stats, _ = model(*batch())
    torch.manual_seed(13)
    theirs, _, _ = reference(*batch())
    assert torch.equal(ours, theirs) and "loss_cr" not in stats


@pytest.mark.parametrize("decoder", [None, "transformer"])
def test_every_parameter_gets_a_gradient(decoder):
    model = build(decoder, cr_loss_scale=0.2, cr_loss_warmup_steps=0).train()
    model(*batch())[0].backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_specaug_is_restored_when_the_forward_fails():
    model = build(cr_loss_scale=0.2).train()
    specaug = model.specaug
    speech, _, text, text_lengths = batch()
    with pytest.raises(Exception):
        model(speech[:, :5], torch.tensor([5, 5, 5]), text, text_lengths)  # too short for conv2d subsampling
    assert model.specaug is specaug and model._two_view_pass is None and model._view_encoder_out is None


def test_cr_weight_ramps_up_over_the_optimizer_updates():
    model = build(cr_loss_scale=0.2, cr_loss_warmup_steps=4).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    for step, weight in enumerate([0.0, 0.05, 0.1, 0.15, 0.2, 0.2]):
        for _ in range(2):  # two forwards per update, as with accum_grad: 2
            loss, stats, _ = model(*batch())
            loss.backward()
            assert int(model.num_updates) == step
            assert model.cr_loss_weight() == pytest.approx(weight)
            assert loss.item() == pytest.approx(stats["loss_ctc"].item() + weight * stats["loss_cr"].item(), rel=1e-6)
        optimizer.step()
    assert "num_updates" in model.state_dict()


@pytest.mark.parametrize(
    "build_model, kwargs, message",
    [
        (build, {"cr_loss_scale": -0.1}, "model_conf.cr_loss_scale must be a number >= 0"),
        (build, {"cr_loss_scale": True}, "model_conf.cr_loss_scale must be a number >= 0"),
        (build, {"cr_loss_warmup_steps": 1.5}, "model_conf.cr_loss_warmup_steps must be an integer >= 0"),
        (lambda **kw: build("transformer", **kw), {"ctc_weight": 0.0}, "set model_conf.ctc_weight > 0"),
        (lambda **kw: CRCTCASRModel(**{**modules(specaug=False), "ctc_weight": 1.0}, **kw), {}, "needs a SpecAugment"),
        (build, {"aux_ctc": {"0": "text_aux"}}, "aux_ctc is not supported"),
        (lambda **kw: CRCTCASRModel(**{**modules(), "joint_network": torch.nn.Linear(1, 1)}, **kw), {}, "espnet_rnnt"),
    ],
)
def test_bad_configuration_names_the_key(build_model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_model(**kwargs)


@pytest.mark.slow
def test_asr_train_with_espnet_crctc_and_asr_inference(tmp_path):
    train = write_random_corpus(tmp_path / "train", 8, seed=0)
    valid = write_random_corpus(tmp_path / "valid", 2, seed=1)
    (tmp_path / "tokens.txt").write_text("\n".join(TOKENS) + "\n")
    config = {
        "frontend_conf": {"n_fft": 512, "hop_length": 160, "n_mels": 20},
        "specaug": "specaug",
        "specaug_conf": {"time_warp_window": 3, "num_time_mask": 2, "time_mask_width_ratio_range": [0.0, 0.1]},
        "encoder": "conformer",
        "encoder_conf": {"output_size": 16, "attention_heads": 2, "linear_units": 32, "num_blocks": 1,
                         "input_layer": "conv2d"},
        "decoder": "none",
        "model": "espnet_crctc",
        "model_conf": {"ctc_weight": 1.0, "cr_loss_scale": 0.2, "cr_loss_warmup_steps": 0},
        "optim": "adam", "optim_conf": {"lr": 0.01},
        "max_epoch": 2, "batch_type": "unsorted", "batch_size": 2, "num_workers": 0,
        "best_model_criterion": [["valid", "loss", "min"]], "keep_nbest_models": 1, "seed": 0,
    }
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    log = run_espnet("asr_train", *asr_train_arguments(train, valid), "--output_dir", "exp",
                     "--train_shape_file", f"{train}/wav.scp", "--valid_shape_file", f"{valid}/wav.scp", cwd=tmp_path)
    epochs = re.findall(r"epoch results: \[train\](.*?)\[valid\](.*)", log)
    assert len(epochs) == 2, log[-3000:]
    for train_stats, valid_stats in epochs:
        assert "loss_cr=" in train_stats and "loss_ctc=" in train_stats
        assert "loss_cr=" not in valid_stats and "cer_ctc=" in valid_stats
    checkpoint = torch.load(tmp_path / "exp" / "checkpoint.pth", map_location="cpu", weights_only=False)  # our own file
    assert int(checkpoint["model"]["num_updates"]) == 8  # 2 epochs x 4 updates

    run_espnet("asr_inference", "--asr_train_config", "exp/config.yaml", "--asr_model_file", "exp/valid.loss.best.pth",
               "--data_path_and_name_and_type", f"{valid}/wav.scp,speech,sound", "--output_dir", "decode",
               "--beam_size", "2", "--ctc_weight", "1.0", "--ngpu", "0", cwd=tmp_path)
    hypotheses = (tmp_path / "decode" / "1best_recog" / "token").read_text().splitlines()
    assert sorted(line.split()[0] for line in hypotheses) == ["valid00", "valid01"]
    for line in hypotheses:
        assert set(line.split()[1:]) <= set(TOKENS[1:-1])
