"""Causal (streaming) Zipformer: icefall's own outputs, icefall's parameter names, causality, training, configuration.

``data/zipformer_causal_icefall.pt`` holds outputs of icefall's code (k2-fsa/icefall 36e0420, egs/librispeech/ASR/
zipformer: ``Conv2dSubsampling`` + ``Zipformer2(causal=True)``, eval, CPU, float32) for the weights of
:func:`seeded_icefall_state` (loaded into icefall strictly, legacy keys included) and the inputs of
:func:`golden_input`: its simulated streaming (``forward`` with one chunk size and left context) for several settings
and lengths, and its own chunk-by-chunk ``streaming_forward`` (45 feature frames per chunk of 16).
"""

import math
import random
import re
import warnings
from pathlib import Path

import pytest
import torch

from hybrid_encoders.convert.icefall_zipformer import (
    convert_state_dict,
    encoder_conf_from_icefall_args,
    load_icefall_encoder,
)
from hybrid_encoders.encoders.zipformer import ZipformerEncoder
from hybrid_encoders.regularization.scheduled_float import ScheduledFloat

from conftest import CAUSAL_TWO_STACKS, causal_two_stacks, icefall_zipformer_m_keys

DATA = Path(__file__).resolve().parent / "data" / "zipformer_causal_icefall.pt"

# icefall train.py arguments of the golden model (its other arguments: the defaults)
GOLDEN_ARGS = {
    "num_encoder_layers": "1,1,2,1,1,1",
    "encoder_dim": "32,40,48,64,48,40",
    "encoder_unmasked_dim": "24,24,32,32,32,24",
    "feedforward_dim": "48,64,80,96,80,64",
    "num_heads": "2,2,2,4,2,2",
    "query_head_dim": "8",
    "value_head_dim": "4",
    "pos_head_dim": "4",
    "pos_dim": "8",
    "cnn_module_kernel": "7,7,5,5,5,7",
    "causal": "1",
    "chunk_size": "16,32,64,-1",
    "left_context_frames": "32,64,128,-1",
}
GOLDEN_CASES = [(16, 32), (32, 64), (8, 64)]  # (chunk_size, left_context_frames) of the simulated outputs
GOLDEN_LENGTHS = [20, 39, 100, 333]  # feature frames; 20 is shorter than one chunk of 16 (a sole short chunk)

def golden_input(frames: int) -> torch.Tensor:
    """(1, frames, 80) features of the golden cases."""
    return torch.randn(1, frames, 80, generator=torch.Generator().manual_seed(frames))


def seeded_icefall_state(seed: int = 0) -> dict:
    """icefall-named weights of the golden model (legacy per-layer ``bypass_scale`` included), independent of any
    module's initialisation: N(0, 1/fan_in) matrices, N(0, 0.1^2) vectors and scalars, in key order."""
    model = ZipformerEncoder(80, **encoder_conf_from_icefall_args(GOLDEN_ARGS))
    names = {key: tuple(value.shape) for key, value in model.state_dict().items() if key != "batch_count"}
    for key in list(names):  # icefall's unused legacy parameter, one per layer
        match = re.match(r"^(encoder\.encoders\.\d+\.(?:encoder\.)?layers\.\d+\.)norm\.bias$", key)
        if match:
            names[match.group(1) + "bypass_scale"] = names[key]
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key in sorted(names):
        shape = names[key]
        scale = math.prod(shape[1:]) ** -0.5 if len(shape) >= 2 else 0.1
        state[key] = torch.randn(shape, generator=generator) * scale
    return state


@pytest.fixture(scope="module")
def golden():
    if not DATA.is_file():
        pytest.skip(f"{DATA} is absent")
    return torch.load(DATA)


def test_simulated_streaming_equals_icefall(golden):
    encoder, conf = load_icefall_encoder(seeded_icefall_state(), icefall_args=GOLDEN_ARGS, causal=True)
    assert conf["causal"] is True and conf["chunk_size"] == [16, 32, 64, -1]
    encoder.eval()
    for chunk_size, left_context in GOLDEN_CASES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (8, 64) is not in the training lists
            encoder.set_streaming(chunk_size, left_context)
        for frames in GOLDEN_LENGTHS:
            with torch.no_grad():
                out, olens, _ = encoder(golden_input(frames), torch.tensor([frames]))
            expected = golden["simulated"][f"{chunk_size}_{left_context}_{frames}"]
            assert out.shape == expected.shape and int(olens[0]) == expected.size(1)
            torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    # the settings give different outputs: the comparison above is not blind to the chunking
    cases = golden["simulated"]
    assert (cases["16_32_333"] - cases["32_64_333"]).abs().max() > 1e-2


def test_chunk_by_chunk_equals_icefalls_streaming_forward(golden):
    encoder, _ = load_icefall_encoder(seeded_icefall_state(), icefall_args=GOLDEN_ARGS, causal=True)
    encoder.eval().set_streaming(16, 32)
    features = golden_input(golden["streaming_frames"])
    with torch.no_grad():
        ys, olens, _ = encoder.forward_streaming(features, torch.tensor([features.size(1)]))
    expected = golden["streaming"]  # icefall: whole chunks only (it pads the tail, we do not feed one here)
    assert int(olens[0]) == expected.size(1)
    torch.testing.assert_close(ys, expected, rtol=0, atol=1e-5)


def _icefall_causal_m_keys() -> dict:
    """icefall's causal Zipformer-M state-dict keys and shapes, derived from its 731-key non-causal list as icefall's
    ConvolutionModule builds them: each depthwise_conv (C, 1, k) becomes ChunkCausalDepthwiseConv1d's five tensors."""
    keys = {}
    for key, shape in icefall_zipformer_m_keys().items():
        if ".conv_module" in key and key.endswith(".depthwise_conv.weight"):
            prefix, (channels, _, kernel) = key[: -len("weight")], shape
            keys[prefix + "causal_conv.weight"] = (channels, 1, (kernel + 1) // 2)
            keys[prefix + "causal_conv.bias"] = (channels,)
            keys[prefix + "chunkwise_conv.weight"] = (channels, 1, kernel)
            keys[prefix + "chunkwise_conv.bias"] = (channels,)
            keys[prefix + "chunkwise_conv_scale"] = (2, channels, kernel)
        elif not (".conv_module" in key and key.endswith(".depthwise_conv.bias")):
            keys[key] = shape
    return keys


def test_icefall_causal_m_state_dict_loads_strictly_with_its_parameter_count():
    icefall = _icefall_causal_m_keys()
    assert len(icefall) == 827  # research note §14: causal M has 827 tensors
    # research note §8: 64,556,023 parameters (embed + encoder), of which 5,760 unused legacy ones we leave out
    assert sum(math.prod(shape) for shape in icefall.values()) == 64_556_023
    state = {key: torch.randn(shape) for key, shape in icefall.items()}
    encoder, conf = load_icefall_encoder(state, preset="m", causal=True)
    assert conf == {"preset": "m", "causal": True}
    assert sum(p.numel() for p in encoder.parameters()) == 64_556_023 - 5_760
    converted, dropped = convert_state_dict(state)
    loaded = encoder.state_dict()
    assert len(dropped) == 16 and set(converted) == set(loaded) - {"batch_count"}
    assert all(torch.equal(loaded[key], value) for key, value in converted.items())
    with pytest.raises(ValueError, match="pass --causal"):
        load_icefall_encoder(state, preset="m", causal=False)


@pytest.mark.parametrize("preset", ["s", "l"])
def test_causal_presets_add_exactly_the_chunk_causal_convolution_parameters(preset):
    plain = sum(p.numel() for p in ZipformerEncoder(80, preset=preset).parameters())
    causal = ZipformerEncoder(80, preset=preset, causal=True)
    config = causal.config
    # per conv module: a causal conv of (k + 1) / 2 taps with bias, and the (2, C, k) edge scales
    extra = sum(
        2 * layers * (dim * (kernel + 1) // 2 + dim + 2 * dim * kernel)
        for layers, dim, kernel in zip(config["num_encoder_layers"], config["encoder_dim"], config["cnn_module_kernel"])
    )
    assert sum(p.numel() for p in causal.parameters()) == plain + extra


def _first_changed_output(encoder, features: torch.Tensor, changed_from: int) -> int:
    """Index of the first output frame that differs after features[changed_from:] are replaced."""
    other = features.clone()
    other[:, changed_from:] = torch.randn_like(other[:, changed_from:])
    with torch.no_grad():
        a, _, _ = encoder(features, torch.tensor([features.size(1)]))
        b, _, _ = encoder(other, torch.tensor([other.size(1)]))
    differs = (a - b).abs().amax(dim=(0, 2)) > 0
    return int(differs.nonzero()[0]) if differs.any() else a.size(1)


@pytest.mark.parametrize("chunk_size, left_context", [(8, 16), (16, 16), (16, -1)])
def test_forward_is_chunk_causal(chunk_size, left_context):
    encoder = causal_two_stacks(decode_chunk_size=chunk_size, decode_left_context_frames=left_context)
    features = torch.randn(1, 201, 80)
    for chunk in (1, 3, 4):
        # the output frames of chunks < `chunk` need the feature frames < 2 C chunk + 13, and only those
        needed = 2 * chunk_size * chunk + 13
        assert _first_changed_output(encoder, features, needed) == chunk * chunk_size // 2
        assert _first_changed_output(encoder, features, needed - 1) < chunk * chunk_size // 2


def test_non_causal_model_sees_the_future():
    encoder = causal_two_stacks(causal=False)
    assert _first_changed_output(encoder, torch.randn(1, 201, 80), 180) == 0


def test_training_draws_a_chunk_setting_per_batch_and_trains_every_parameter():
    encoder = causal_two_stacks().train()
    draws = set()
    random.seed(0)
    for _ in range(60):
        draws.add(encoder.chunking())
    assert draws == {(8, 2), (8, 4), (8, -1), (16, 1), (16, 2), (16, -1), (-1, -1)}
    assert encoder.eval().chunking() == (8, 2)  # eval: the lists' first entries
    encoder.train()
    encoder.batch_count.fill_(100000)
    encoder._step_counter.forget()
    out, _, _ = encoder(torch.randn(3, 90, 80), torch.tensor([90, 71, 50]))
    out.pow(2).mean().backward()
    missing = [name for name, p in encoder.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert missing == []


def test_training_forward_at_rest_equals_the_simulated_streaming_forward():
    encoder = causal_two_stacks(chunk_size=[8], left_context_frames=[16])
    xs, ilens = torch.randn(2, 120, 80), torch.tensor([120, 120])
    with torch.no_grad():
        simulated, _, _ = encoder.eval()(xs, ilens)
        encoder.train()
        for module in encoder.modules():
            if isinstance(module, ScheduledFloat):
                module.points = ((0.0, 0.0),)
        for module in encoder.modules():
            if hasattr(module, "encoder_pos"):
                module.encoder_pos.dropout_rate = 0.0
        encoder.encoder.training = False  # no feature masks
        trained, _, _ = encoder(xs, ilens)
    torch.testing.assert_close(trained, simulated, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"chunk_size": [16, 13]}, "chunk_size entries must be -1 or positive multiples of 2"),
        ({"left_context_frames": [-2]}, "left_context_frames entries must be -1 or > 0"),
        ({"cnn_module_kernel": [7, 31]}, "left_context_frames=16 with chunk_size=8 sees 16 frames, fewer than the "),
        ({"decode_chunk_size": 0}, "chunk_size"),
        ({"chunk_size": []}, "chunk_size needs at least one value"),
    ],
)
def test_configuration_errors_name_the_key(overrides, match):
    with pytest.raises(ValueError, match=match):
        ZipformerEncoder(80, **{**CAUSAL_TWO_STACKS, **overrides})


def test_non_causal_ignores_chunk_lists_and_refuses_set_streaming():
    encoder = ZipformerEncoder(80, **{**CAUSAL_TWO_STACKS, "causal": False, "chunk_size": [12]})
    assert encoder.chunking() == (-1, -1)
    with pytest.raises(ValueError, match="set_streaming needs a causal model"):
        encoder.set_streaming(8, 16)


def test_decode_setting_outside_the_training_lists_works_with_a_warning():
    with pytest.warns(UserWarning, match="decode_chunk_size=24 works, but was not trained for it"):
        ZipformerEncoder(80, **CAUSAL_TWO_STACKS, decode_chunk_size=24)
    encoder = causal_two_stacks()
    with pytest.warns(UserWarning, match="decode_left_context_frames=48 works, but was not trained for it"):
        encoder.set_streaming(16, 48)
    assert encoder.chunking() == (16, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encoder.set_streaming(8, 32)  # trained values: silent
    with pytest.raises(ValueError, match="chunk_size entries must be -1 or positive multiples"):
        encoder.set_streaming(7, 32)


def test_streaming_geometry():
    geometry = ZipformerEncoder(80, preset="m", causal=True, decode_chunk_size=16, decode_left_context_frames=128)
    geometry = geometry.streaming_geometry()
    assert (geometry.chunk_size, geometry.left_context_frames) == (16, 128)
    assert geometry.features_needed(1) == 45 and geometry.features_needed(3) == 109  # icefall's T = 2C + 13
    assert geometry.features_per_chunk == 32 and geometry.output_frames_per_chunk == 8
    assert geometry.algorithmic_latency_ms() == 450.0 and geometry.chunk_ms() == 320.0
    with pytest.warns(UserWarning, match="not trained"):
        rounded = causal_two_stacks(decode_chunk_size=16, decode_left_context_frames=40).streaming_geometry()
    assert rounded.left_context_frames == 32  # whole chunks, as the attention mask counts them
    with pytest.raises(ValueError, match="finite chunk size and left context"):
        causal_two_stacks(decode_chunk_size=-1).streaming_geometry()
