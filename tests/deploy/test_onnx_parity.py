"""ONNX Runtime against PyTorch for every encoder: the length sweep, 60 s inputs, padded batches, int8, transducer.

Length sweep. The graphs' shapes depend on the input length T only through floor divisions by the strides of the
front end and the encoder stacks: Squeezeformer / HybridFormer subsample by 2 twice and reduce time once more by 2
(period 8 in T), Zipformer's embed maps T -> (T - 7) // 2 and its stacks downsample by up to 8 and the output by 2
(period 32 in T after the embed, 64 before). So every class of lengths that a traced shape could get wrong is
covered by all 64 consecutive lengths from the minimum (every residue modulo 64, odd and even), plus long lengths
around the old traps (1,000 frames: ESPnet's positional table; powers of two) up to 3,000. The slow-marked test
runs every length from the minimum to 600 and every 7th one beyond, up to 3,000.
"""

import numpy as np
import pytest
import torch

from deploy_helpers import SYSTEMS, exported, padded_features, pytorch_encoder

from hybrid_encoders.deploy import OnnxAsrModel

ATOL = 1e-4
LONG_LENGTHS = (999, 1000, 1001, 1023, 1024, 1999, 2047, 2048, 2999, 3000)


def _onnx(name):
    model, folder = exported(name)
    return model, OnnxAsrModel(folder, decoding="ctc")


def _compare(model, onnx_model, lengths, seed=0):
    """ORT CTC log-probs and lengths vs ESPnet's path (GlobalMVN, encoder, CTC) on one padded batch."""
    features, lengths = padded_features(lengths, seed=seed)
    encoded, encoded_lengths = pytorch_encoder(model, features, lengths)
    with torch.no_grad():
        expected = model.ctc.log_softmax(encoded).numpy()
    log_probs, ort_lengths = onnx_model.ctc(features.numpy(), lengths.numpy())
    np.testing.assert_array_equal(ort_lengths, encoded_lengths.numpy())
    assert log_probs.shape == expected.shape
    for row, length in enumerate(encoded_lengths.tolist()):
        difference = np.abs(log_probs[row, :length] - expected[row, :length]).max(initial=0.0)
        assert difference <= ATOL, f"lengths {lengths.tolist()}, row {row}: max difference {difference}"


def _sweep(name, lengths):
    model, onnx_model = _onnx(name)
    start = onnx_model.min_input_frames
    for length in lengths:
        if length >= start:
            _compare(model, onnx_model, [length], seed=length)


@pytest.mark.parametrize("name", SYSTEMS)
def test_every_length_class_and_long_inputs(name):
    _, onnx_model = _onnx(name)
    start = onnx_model.min_input_frames
    _sweep(name, [*range(start, start + 64), *LONG_LENGTHS])


@pytest.mark.slow
@pytest.mark.parametrize("name", SYSTEMS)
def test_dense_length_sweep(name):
    _sweep(name, [*range(1, 601), *range(601, 3001, 7), 3000])


@pytest.mark.parametrize("name", SYSTEMS)
def test_sixty_seconds(name):
    """6,000 frames, twice the longest length the graphs were traced or checked at: nothing is frozen."""
    model, onnx_model = _onnx(name)
    _compare(model, onnx_model, [6000], seed=60)


@pytest.mark.parametrize("name", SYSTEMS)
@pytest.mark.parametrize("lengths", [[517], [403, 388, 121], [640, 639, 600, 513, 257, 256, 99, 64]])
def test_padded_batches(name, lengths):
    model, onnx_model = _onnx(name)
    _compare(model, onnx_model, lengths, seed=len(lengths))


def test_below_the_minimum_is_rejected():
    _, onnx_model = _onnx("zipformer")
    features, lengths = padded_features([40, onnx_model.min_input_frames - 1])
    with pytest.raises(ValueError, match="needs at least"):
        onnx_model.ctc(features.numpy(), lengths.numpy())


def test_int8_graph():
    """--quantize int8 (through the command line): MatMul weights are int8, the graph runs on the same inputs and
    gives the same lengths and nearly the same log-probabilities (a random model: no WER to compare)."""
    import onnx

    model, folder = exported("squeezeformer")
    quantized = onnx.load(str(folder / "ctc.int8.onnx"))
    int8_weights = [t for t in quantized.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= 10
    assert (folder / "ctc.int8.onnx").stat().st_size < (folder / "ctc.onnx").stat().st_size
    features, lengths = padded_features([300, 211])
    fp32, fp32_lengths = OnnxAsrModel(folder).ctc(features.numpy(), lengths.numpy())
    int8, int8_lengths = OnnxAsrModel(folder, int8=True).ctc(features.numpy(), lengths.numpy())
    np.testing.assert_array_equal(int8_lengths, fp32_lengths)
    assert np.abs(np.exp(int8) - np.exp(fp32)).max() < 0.1


def test_transducer_graphs_match_the_pytorch_modules():
    """decoder.onnx against the decoder's own search API (score, as ESPnet's beam search calls it) followed by the
    joint network's decoder projection; joiner.onnx against ESPnet's JointNetwork."""
    from espnet.nets.transducer_decoder_interface import Hypothesis

    model, folder = exported("zipformer")
    onnx_model = OnnxAsrModel(folder)
    contexts = np.array([[-1, 0], [0, 3], [5, 7], [2, 2]], dtype=np.int64)
    decoder_out = onnx_model.decoder(contexts)
    with torch.no_grad():
        for row, (first, last) in enumerate(contexts.tolist()):
            state = torch.tensor([[-1, first]])  # the state before the last label
            hypothesis = Hypothesis(score=0.0, yseq=[0, last], dec_state=state)
            expected = model.joint_network.lin_dec(model.decoder.score(hypothesis, {})[0])
            np.testing.assert_allclose(decoder_out[row], expected.numpy(), atol=ATOL)
        encoder_out = torch.randn(4, model.joint_network.lin_enc.out_features)
        expected = model.joint_network(encoder_out, torch.from_numpy(decoder_out), no_projection=True)
    np.testing.assert_allclose(onnx_model.joiner(encoder_out.numpy(), decoder_out), expected.numpy(), atol=ATOL)


def _float_weight_products(model):
    """Names of the float MatMuls of ``model`` whose second operand is a 2-D constant, read directly or through a
    Transpose (what dynamic quantisation should have made integer products)."""
    constants = {t.name: len(t.dims) for t in model.graph.initializer}
    transposed = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Transpose"}
    return [n.name for n in model.graph.node if n.op_type == "MatMul"
            and constants.get(transposed.get(n.input[1], n.input[1])) == 2]  # fmt: skip


def test_int8_quantises_every_weight_product_and_keeps_the_metadata(tmp_path):
    """Zipformer's Swoosh-then-linear layers leave their weights behind a Transpose in the exported graph (the layer
    reads the weights' row sums too); the int8 recipe folds those first, so no weight product stays float32, and the
    sherpa-onnx metadata of the source survives."""
    import onnx

    from hybrid_encoders.deploy.onnx_export import quantize_int8

    _, folder = exported("zipformer")
    source = onnx.load(str(folder / "encoder.onnx"))
    assert _float_weight_products(source), "the exported graph no longer has weights behind a Transpose"
    quantize_int8(folder / "encoder.onnx", tmp_path / "encoder.int8.onnx")
    quantized = onnx.load(str(tmp_path / "encoder.int8.onnx"))
    assert _float_weight_products(quantized) == []
    metadata = {entry.key: entry.value for entry in quantized.metadata_props}
    for entry in source.metadata_props:
        assert metadata.get(entry.key) == entry.value, entry.key
    assert "model_type" in metadata
