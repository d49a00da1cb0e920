from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from hybrid_encoders.encoders.hybridformer import HybridformerEncoder
from hybrid_encoders.encoders.squeezeformer import SqueezeformerEncoder
from hybrid_encoders.layers.linear_attention import LinearAttention
from hybrid_encoders.layers.rel_attention import RelPositionMultiHeadedAttention
from hybrid_encoders.layers.reparam_conv import ReparamDepthwiseConv

from conftest import randomise_batch_norms

TINY = {"output_size": 64, "attention_heads": 2, "num_blocks": 6, "linear_units": 96}  # U-Net: reduce 2, recover 5


def _inputs(lengths, seed=0):
    generator = torch.Generator().manual_seed(seed)
    xs = torch.randn(len(lengths), max(lengths), 80, generator=generator)
    return xs, torch.tensor(lengths)


def test_default_layout_linear_at_full_rate_softmax_when_reduced():
    encoder = HybridformerEncoder(80, **TINY)
    assert encoder.config["attention_types"] == ["linear", "linear", "softmax", "softmax", "softmax", "linear"]
    kinds = [type(block.self_attn) for block in encoder.encoders]
    assert kinds == [LinearAttention] * 2 + [RelPositionMultiHeadedAttention] * 3 + [LinearAttention]
    assert encoder.encoders[0].self_attn.rotary.rope_dim == 16  # d_k / 2
    sm = HybridformerEncoder.build_config("sm")
    assert sm["attention_types"] == ["linear"] * 7 + ["softmax"] * 8 + ["linear"]
    assert HybridformerEncoder.build_config("sm", temporal_unet=False)["attention_types"] == ["linear"] * 16


def test_presets_mirror_squeezeformer_sizes():
    assert set(HybridformerEncoder.PRESETS) == {"s", "sm", "m"}
    for preset in ("s", "sm", "m"):
        hybrid = HybridformerEncoder.build_config(preset)
        squeeze = SqueezeformerEncoder.build_config(preset)
        assert {key: hybrid[key] for key in squeeze} == squeeze
    with pytest.raises(ValueError, match="unknown preset 'xs'"):
        HybridformerEncoder.build_config("xs")


@pytest.mark.parametrize("preset", ["s", "sm", "m"])
def test_conf_files_equal_the_presets(preset):
    path = Path(__file__).resolve().parents[2] / "conf" / "hybridformer" / f"{preset}.yaml"
    written = yaml.safe_load(path.read_text())
    assert written["encoder"] == "hybridformer"
    assert HybridformerEncoder.build_config(**written["encoder_conf"]) == HybridformerEncoder.build_config(preset)


def test_default_nsr_is_the_authors_searched_branches():
    config = HybridformerEncoder.build_config(num_blocks=2)
    assert config["nsr_mode"] == "train"
    assert config["nsr_rep_list"] == [[3, 4, 5, 2, 6]] * 2
    assert config["nsr_rep_alphas"] == [[0.546, 0.291, 0.098, 0.034, 0.031]] * 2
    own = HybridformerEncoder.build_config(num_blocks=2, nsr_rep_list=[[3], [0, 5]])
    assert own["nsr_rep_alphas"] == [[1.0], [1.0, 1.0]]  # own list without alphas: every branch at scale 1


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"attention_types": ["linear"] * 5}, "attention_types"),
        ({"attention_types": ["linear"] * 5 + ["cosformer"]}, "attention_types"),
        ({"attention_types": "mixed"}, "attention_types"),
        ({"linear_attention_feature_map": "softmax"}, "linear_attention_feature_map"),
        ({"linear_attention_rope_dim": 5}, "linear_attention_rope_dim"),
        ({"linear_attention_rope_dim": 64}, "linear_attention_rope_dim"),
        ({"linear_attention_denominator": "none"}, "linear_attention_denominator"),
        ({"nsr_mode": "fixed"}, "nsr_mode"),
        ({"nsr_rep_list": [3, 33]}, "nsr_rep_list"),
        ({"nsr_rep_list": [3, 3]}, "nsr_rep_list"),
        ({"nsr_rep_list": [[3]] * 5}, "nsr_rep_list"),
        ({"nsr_rep_list": [3, [5]]}, "nsr_rep_list"),
        ({"nsr_rep_list": [3, 5], "nsr_rep_alphas": [0.5]}, "nsr_rep_alphas"),
        ({"nsr_mode": "search", "nsr_candidates": []}, "nsr_candidates"),
        ({"nsr_candidates": [-1, 3]}, "nsr_candidates"),
        ({"nsr_candidates": 3}, "nsr_candidates"),
        ({"attention_types": 3}, "attention_types"),
        ({"rope": True}, "rope"),
    ],
)
def test_bad_configuration_names_the_key(overrides, key):
    with pytest.raises(ValueError, match=key):
        HybridformerEncoder(80, **{**TINY, **overrides})


@torch.no_grad()
def test_forward_shapes_lengths_and_padding_invariance():
    torch.manual_seed(0)
    encoder = randomise_batch_norms(HybridformerEncoder(80, **TINY)).eval()
    xs, ilens = _inputs([97, 61, 80])
    out, olens, states = encoder(xs, ilens)
    assert states is None
    assert olens.tolist() == [25, 16, 20]  # ceil(ceil(L / 2) / 2)
    assert out.shape == (3, 25, 64)
    alone, _, _ = encoder(xs[1:2, :61], ilens[1:2])
    torch.testing.assert_close(out[1, :16], alone[0], atol=1e-5, rtol=0)


def test_intermediate_ctc_and_too_short_input():
    from espnet.nets.pytorch_backend.transformer.subsampling import TooShortUttError

    encoder = HybridformerEncoder(80, **TINY, interctc_layer_idx=[1, 2]).eval()
    xs, ilens = _inputs([40, 33])
    (out, intermediate), olens, _ = encoder(xs, ilens)
    assert [layer for layer, _ in intermediate] == [1, 2]
    assert intermediate[0][1].shape == out.shape
    with pytest.raises(TooShortUttError):
        encoder(xs[:, :5], torch.tensor([5, 0]))  # no frame survives the subsampling


@torch.no_grad()
def test_reparameterized_encoder_equals_multi_branch_and_reloads():
    torch.manual_seed(1)
    all_kinds = {"nsr_rep_list": [0, 2, 3, 4, 5, 6], "nsr_rep_alphas": [0.3, 0.2, 0.2, 0.1, 0.1, 0.1]}
    encoder = randomise_batch_norms(HybridformerEncoder(80, **TINY, **all_kinds)).eval()
    xs, ilens = _inputs([90, 70])
    expected, _, _ = encoder(xs, ilens)
    deploy_conf = encoder.reparameterize()
    deployed, _, _ = encoder(xs, ilens)
    assert (deployed - expected).abs().max().item() <= 1e-5
    assert deploy_conf["nsr_mode"] == "deploy"
    assert all(block.conv_module.depthwise.mode == "deploy" for block in encoder.encoders)
    assert not any(isinstance(module, nn.BatchNorm1d) for module in encoder.modules())
    fresh = HybridformerEncoder(80, **deploy_conf).eval()
    fresh.load_state_dict(encoder.state_dict(), strict=True)
    torch.testing.assert_close(fresh(xs, ilens)[0], deployed, atol=0, rtol=0)


@torch.no_grad()
def test_all_softmax_without_nsr_is_the_plain_squeezeformer():
    torch.manual_seed(2)
    squeezeformer = randomise_batch_norms(SqueezeformerEncoder(80, **TINY)).eval()
    hybrid = HybridformerEncoder(80, **TINY, attention_types="softmax", nsr_mode="off").eval()
    hybrid.load_state_dict(squeezeformer.state_dict(), strict=True)
    xs, ilens = _inputs([77, 50])
    torch.testing.assert_close(hybrid(xs, ilens)[0], squeezeformer(xs, ilens)[0], atol=0, rtol=0)


def test_search_mode_parameter_groups_gradients_and_export_round_trip():
    torch.manual_seed(3)
    search = HybridformerEncoder(80, **TINY, nsr_mode="search", nsr_candidates=[0, 2, 3, 5])
    arch = search.arch_parameters()
    weights = search.weight_parameters()
    assert len(arch) == 6 and all(p.shape == (4,) for p in arch)
    assert {id(p) for p in arch}.isdisjoint(id(p) for p in weights)
    assert len(arch) + len(weights) == len(list(search.parameters()))
    optimizer = torch.optim.Adam([{"params": weights, "lr": 1e-3}, {"params": arch, "lr": 3e-4, "weight_decay": 1e-3}])
    xs, ilens = _inputs([60, 45])
    search(xs, ilens)[0].pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in arch)
    optimizer.step()

    search.eval()
    with torch.no_grad():
        for logits in arch:
            logits.normal_()
    exported = search.export_nsr()
    assert exported["nsr_mode"] == "train" and len(exported["nsr_rep_list"]) == 6
    for logits, kernels, alphas in zip(arch, exported["nsr_rep_list"], exported["nsr_rep_alphas"]):
        softmax = dict(zip([0, 2, 3, 5], torch.softmax(logits.detach(), 0).tolist()))
        assert kernels == sorted(softmax, key=softmax.get, reverse=True)
        assert alphas == pytest.approx([softmax[k] for k in kernels])
    train = HybridformerEncoder(80, **TINY, **exported).eval()
    missing, unexpected = train.load_state_dict(search.state_dict(), strict=False)
    arch_keys = [f"encoders.{i}.conv_module.depthwise.arch_logits" for i in range(6)]
    assert missing == [] and sorted(unexpected) == sorted(arch_keys)
    with torch.no_grad():
        torch.testing.assert_close(train(xs, ilens)[0], search(xs, ilens)[0], atol=1e-5, rtol=0)
    top1 = search.export_nsr(top_k=1)
    assert all(len(kernels) == 1 for kernels in top1["nsr_rep_list"])
    with pytest.raises(RuntimeError, match="search"):
        train.export_nsr()


def test_espnet_initialisation_keeps_nsr_usable():
    from espnet2.torch_utils.initialize import initialize

    encoder = HybridformerEncoder(80, **TINY, nsr_mode="search")
    initialize(encoder, "xavier_uniform")
    for block in encoder.encoders:
        conv = block.conv_module.depthwise
        assert isinstance(conv, ReparamDepthwiseConv)
        assert conv.arch_logits.abs().max() < 0.01  # re-drawn near zero, not left at ESPnet's choice
        for branch in [conv.main, *conv.branches.values()]:
            assert torch.equal(branch.norm.weight, torch.ones_like(branch.norm.weight))
            if branch.conv is not None:
                assert branch.conv.weight.abs().max() <= branch.kernel_size**-0.5
