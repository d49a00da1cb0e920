"""``export_onnx``: a trained ESPnet experiment -> a folder of ONNX graphs that sherpa-onnx and onnxruntime run.

Folder layout (``DIR``):

=====================  ==========================================================================================
``ctc.onnx``           CTC models, and transducers trained with a CTC head: features -> log-probs (sherpa-onnx
                       ``zipformer2_ctc`` convention, whatever the encoder)
``encoder.onnx``       transducers: features -> encoder output projected to the joint space (sherpa ``zipformer2``)
``decoder.onnx``       transducers: last ``context_size`` labels -> decoder output in the joint space
``joiner.onnx``        transducers: one encoder frame + one decoder output -> logits
``*.int8.onnx``        with ``quantize="int8"``: the encoder-bearing graphs with int8 weights (dynamic quantisation)
``tokens.txt``         ``symbol id`` per line (sherpa-onnx format; ESPnet's ``<space>`` written as ``▁``)
``frontend.yaml``      how features are computed from 16-bit PCM audio (frontend name and options); the
                       normalisation is inside the graphs
``feats_stats.npz``    the global-MVN statistics folded into the graphs (for reference)
``deploy.yaml``        what was exported: model kind, graphs, token ids, lengths, exporter, parity check figures
=====================  ==========================================================================================

With ``streaming=True`` (causal Zipformers), ``ctc.onnx`` and ``encoder.onnx`` encode one chunk with cached states
instead of a whole utterance, in the layout of sherpa-onnx's online ``zipformer2`` models
(:mod:`hybrid_encoders.deploy.streaming_graphs`); the decoder, joiner and the rest of the folder are the same.

Exporter: ``torch.onnx.export(..., dynamo=True)``, torch's default since 2.9, with ``dynamic_shapes`` for the batch
and time axes (``dynamic_axes`` is the TorchScript exporter's option and fails under dynamo, icefall#2040). The
encoders take general code paths while traced (:mod:`hybrid_encoders.layers.export_mode`), so no length or
value is frozen into a graph. Every export is checked before it is published: onnxruntime must reproduce PyTorch
on a padded batch of unequal odd and even lengths (``atol``), else nothing is written. The folder is assembled
under a temporary name beside ``DIR`` and renamed at the end, so ``DIR`` is either complete or absent.
"""

import logging
import pathlib
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import yaml

import hybrid_encoders
from hybrid_encoders.deploy.dependencies import require
from hybrid_encoders.deploy.espnet_model import ExportError, LoadedExperiment, load_experiment
from hybrid_encoders.deploy.graphs import (
    CtcGraph,
    DecoderGraph,
    EncoderGraph,
    FeatureNormalization,
    JoinerGraph,
    run_encoder,
)

DEFAULT_OPSET = 18  # the dynamo exporter's native opset in torch 2.11
QUANTIZATIONS = ("int8",)
SUBSAMPLING_FACTOR = 4  # every exportable encoder: 100 Hz features -> 25 Hz outputs
CHECK_LENGTHS = (203, 150, 97)  # the export self-check's padded batch (odd and even, unequal)
EXPORT_MIN_FRAMES = 32  # see feature_graph_spec


@dataclass
class GraphSpec:
    """One graph to export: the module, its example inputs, names, dynamic axes and metadata."""

    name: str
    module: torch.nn.Module
    example: Tuple[torch.Tensor, ...]
    input_names: List[str]
    output_names: List[str]
    dynamic_shapes: Tuple[Dict[int, object], ...]
    metadata: Dict[str, str] = field(default_factory=dict)
    carries_encoder: bool = False
    streaming: bool = False


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote: the folder, its manifest, and the largest ORT-vs-PyTorch differences."""

    out_dir: pathlib.Path
    manifest: dict

    def __str__(self) -> str:
        lines = [f"wrote {self.out_dir} ({self.manifest['kind']} model, encoder {self.manifest['encoder']})"]
        for name, graph in self.manifest["graphs"].items():
            lines.append(f"  {graph['file']}: max |onnxruntime - PyTorch| = {graph['check_max_abs_diff']:.2g}")
        for name, file in self.manifest.get("quantized", {}).items():
            lines.append(f"  {file}: int8 weights (dynamic quantisation) of {name}")
        return "\n".join(lines)


def _feature_inputs(batch: int, lengths: Sequence[int], feature_dim: int, seed: int = 0):
    """A padded random feature batch (N, max(lengths), F) with its (N,) int64 lengths; padding frames are zero."""
    generator = torch.Generator().manual_seed(seed)
    frames = max(lengths)
    features = torch.randn(batch, frames, feature_dim, generator=generator)
    lengths = torch.tensor(list(lengths), dtype=torch.int64)
    features = features.masked_fill((torch.arange(frames)[None, :] >= lengths[:, None]).unsqueeze(-1), 0.0)
    return features, lengths


def feature_graph_spec(name: str, module: torch.nn.Module, encoder: torch.nn.Module, output_names: List[str],
                       metadata: Dict[str, str]) -> GraphSpec:
    """The spec of a graph on features (``x`` (N, T, F), ``x_lens`` (N,)) with dynamic batch and time axes.

    ``Dim.DYNAMIC`` rather than a named ``Dim``: torch.export then accepts the guards that hold for every length but
    that its symbolic reasoning cannot prove (e.g. ``(8a - 12) % (4a - 6) == 0``, from Zipformer's resampling), where
    a named dimension fails the export. The time axis starts at :data:`EXPORT_MIN_FRAMES`, below which some of those
    guards (``a != a * a``) are false; the parity tests show that the graphs are exact from the encoder's minimum.
    """
    feature_dim = encoder.input_size
    batch = torch.export.Dim.DYNAMIC(min=1)
    time = torch.export.Dim.DYNAMIC(min=max(EXPORT_MIN_FRAMES, minimum_input_frames(encoder)))
    return GraphSpec(
        name, module, _feature_inputs(2, CHECK_LENGTHS[:2], feature_dim), ["x", "x_lens"], output_names,
        ({0: batch, 1: time}, {0: batch}), metadata, carries_encoder=True,
    )  # fmt: skip


def streaming_graph_spec(name: str, graph, output_name: str, metadata: Dict[str, str]) -> GraphSpec:
    """The spec of a :class:`~hybrid_encoders.deploy.streaming_graphs.StreamingChunkGraph` (``x`` (N, T, F) and the
    states) with a dynamic batch axis everywhere."""
    example = (_feature_inputs(2, (graph.frames,) * 2, graph.encoder.input_size)[0], *graph.initial_states(2))
    names = graph.state_names()
    dynamic = ({0: torch.export.Dim.DYNAMIC(min=1)},
               tuple({axis: torch.export.Dim.DYNAMIC(min=1)} for axis in graph.state_batch_axes()))  # fmt: skip
    return GraphSpec(
        name, graph, example, ["x", *names], [output_name, *(f"new_{state}" for state in names)], dynamic,
        {**metadata, **graph.metadata()}, carries_encoder=True, streaming=True,
    )  # fmt: skip


def build_graphs(experiment: LoadedExperiment, streaming: bool = False) -> List[GraphSpec]:
    """The graphs of an experiment (see the module docstring), in export order."""
    # the streaming graphs build on the encoders, which import ESPnet: only when exporting (keeps the CLI importable)
    from hybrid_encoders.deploy.streaming_graphs import StreamingChunkGraph

    model, config = experiment.model, experiment.config
    feature_dim = model.encoder.input_size
    normalization = FeatureNormalization.from_espnet(model.normalize)
    common = {
        "hybrid_encoders_version": hybrid_encoders.__version__,
        "encoder": config["encoder"],
        "vocab_size": str(len(experiment.token_list)),
        "subsampling_factor": str(SUBSAMPLING_FACTOR),
        "feature_dim": str(feature_dim),
        "min_input_frames": str(minimum_input_frames(model.encoder)),
    }
    graphs = []
    if experiment.has_ctc and streaming:
        graph = StreamingChunkGraph(normalization, model.encoder, model.ctc.log_softmax)
        graphs.append(streaming_graph_spec("ctc", graph, "log_probs", {**common, "model_type": "zipformer2"}))
    elif experiment.has_ctc:
        graphs.append(feature_graph_spec(
            "ctc", CtcGraph(normalization, model.encoder, model.ctc), model.encoder, ["log_probs", "log_probs_len"],
            {**common, "model_type": "zipformer2_ctc"},
        ))  # fmt: skip
    if experiment.kind == "transducer":
        joint, decoder = model.joint_network, model.decoder
        context = torch.export.Dim.DYNAMIC(min=1)
        metadata = {**common, "model_type": "zipformer2", "joiner_dim": str(joint.lin_enc.out_features)}
        if streaming:
            graph = StreamingChunkGraph(normalization, model.encoder, joint.lin_enc)
            graphs.append(streaming_graph_spec("encoder", graph, "encoder_out", metadata))
        else:
            graphs.append(feature_graph_spec(
                "encoder", EncoderGraph(normalization, model.encoder, joint.lin_enc, getattr(model, "ctc", None)),
                model.encoder, ["encoder_out", "encoder_out_lens"], metadata,
            ))  # fmt: skip
        labels = torch.tensor([[-1, 0], [3, 5], [0, 2]], dtype=torch.int64)[:, -decoder.context_size :]
        graphs.append(GraphSpec(
            "decoder", DecoderGraph(decoder, joint.lin_dec), (labels,), ["y"], ["decoder_out"], ({0: context},),
            {"vocab_size": str(len(experiment.token_list)), "context_size": str(decoder.context_size)},
        ))  # fmt: skip
        width = joint.lin_enc.out_features
        graphs.append(GraphSpec(
            "joiner", JoinerGraph(joint), (torch.randn(3, width), torch.randn(3, width)),
            ["encoder_out", "decoder_out"], ["logit"], ({0: context}, {0: context}),
            {"vocab_size": str(len(experiment.token_list)), "joiner_dim": str(width)},
        ))  # fmt: skip
    return graphs


def minimum_input_frames(encoder: torch.nn.Module) -> int:
    """The fewest feature frames the encoder accepts (its subsampling front end's minimum)."""
    embed = getattr(encoder, "embed", None) or encoder.encoder_embed
    return embed.min_input_length


def export_graph(spec: GraphSpec, path: pathlib.Path, opset: int) -> None:
    """torch.onnx.export (dynamo) of one graph, then its metadata; ExportError naming the graph on failure."""
    onnx = require("onnx")
    require("onnxscript")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                spec.module.eval(),
                spec.example,
                str(path),
                dynamo=True,
                dynamic_shapes=spec.dynamic_shapes,
                input_names=spec.input_names,
                output_names=spec.output_names,
                opset_version=opset,
                external_data=False,
                verbose=False,
            )
    except Exception as error:  # the exporter raises many types; the message says which graph failed
        raise ExportError(f"exporting {spec.name}.onnx failed: {type(error).__name__}: {error}") from error
    model = onnx.load(str(path))
    check_opset(model, opset, f"{spec.name}.onnx")
    for key, value in spec.metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def check_opset(model, opset: int, name: str) -> None:
    """Every operator of ``model`` must exist at ``opset``; ExportError naming the first that does not.

    The dynamo exporter writes opset 18 and converts to a requested older opset where it can; an operator without
    a definition at the older opset (e.g. LayerNormalization before 17) would otherwise only fail at load time.
    """
    onnx = require("onnx")
    domain_version = {entry.domain: entry.version for entry in model.opset_import}
    if domain_version.get("", opset) != opset:
        raise ExportError(
            f"--opset {opset}: the exporter wrote opset {domain_version['']} for {name}; it cannot convert this model "
            f"to opset {opset}; use --opset {DEFAULT_OPSET}"
        )
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        try:
            onnx.defs.get_schema(node.op_type, opset, "")
        except onnx.defs.SchemaError:
            first = min(schema.since_version for schema in onnx.defs.get_all_schemas_with_history()
                        if schema.name == node.op_type and schema.domain == "")  # fmt: skip
            raise ExportError(
                f"--opset {opset} is too old for {name}: operator {node.op_type} needs opset >= {first}"
            ) from None


def _run_session(path: pathlib.Path, inputs: Dict[str, np.ndarray]) -> List[np.ndarray]:
    ort = require("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, inputs)


def reference_outputs(experiment: LoadedExperiment, spec: GraphSpec, inputs: Tuple[torch.Tensor, ...]):
    """What PyTorch computes for a graph's inputs, through the model's own modules (ESPnet's ``normalize``, the
    encoder as trained, i.e. before HybridFormer folding, the heads), not through the graph modules."""
    model = experiment.model
    if spec.name in ("decoder", "joiner"):
        return [output.numpy() for output in _as_tuple(spec.module(*inputs))]
    features, lengths = inputs
    if model.normalize is not None:  # ESPnet's GlobalMVN works in place
        features, lengths = model.normalize(features.clone(), lengths)
    encoder = experiment.original_encoder or model.encoder
    encoded, encoded_lengths = run_encoder(encoder, getattr(model, "ctc", None), features, lengths)
    head = model.ctc.log_softmax if spec.name == "ctc" else model.joint_network.lin_enc
    return [head(encoded).numpy(), encoded_lengths.numpy()]


def _as_tuple(value):
    return value if isinstance(value, tuple) else (value,)


def check_graph(experiment: LoadedExperiment, spec: GraphSpec, path: pathlib.Path, atol: float) -> float:
    """Max |onnxruntime - PyTorch| over a padded batch of 3 unequal lengths (graphs on features), 3 chunks of 2
    streams (chunk graphs) or the example inputs (decoder, joiner); output lengths must be equal exactly.
    ExportError beyond ``atol``."""
    if spec.streaming:
        return _check_streaming_graph(experiment, spec, path, atol)
    if spec.carries_encoder:
        inputs = _feature_inputs(3, CHECK_LENGTHS, experiment.model.encoder.input_size, seed=1)
    else:
        inputs = spec.example
    with torch.no_grad():
        expected = reference_outputs(experiment, spec, inputs)
    actual = _run_session(path, {name: tensor.numpy() for name, tensor in zip(spec.input_names, inputs)})
    difference = 0.0
    for name, want, got in zip(spec.output_names, expected, actual):
        if want.shape != got.shape:
            raise ExportError(f"{spec.name}.onnx: output {name} has shape {got.shape}, PyTorch gives {want.shape}")
        if want.dtype.kind == "i":
            if not np.array_equal(want, got):
                raise ExportError(f"{spec.name}.onnx: output {name} = {got.tolist()}, PyTorch gives {want.tolist()}")
            continue
        difference = max(difference, float(np.abs(want - got).max()))
    if not difference <= atol:
        raise ExportError(f"{spec.name}.onnx differs from PyTorch by {difference:.3g} > atol {atol:g}")
    return difference


def _check_streaming_graph(experiment: LoadedExperiment, spec: GraphSpec, path: pathlib.Path, atol: float) -> float:
    """onnxruntime fed chunk by chunk with its own states vs ``forward_streaming`` of the model's encoder (after
    ESPnet's ``normalize``) and the head, for 2 streams of 3 chunks."""
    graph, model = spec.module, experiment.model
    chunks, stride = 3, 2 * graph.chunk_size
    features, lengths = _feature_inputs(2, (stride * (chunks - 1) + graph.frames,) * 2, graph.encoder.input_size, 1)
    with torch.no_grad():
        normalized = model.normalize(features.clone(), lengths)[0] if model.normalize is not None else features
        encoded, _, _ = model.encoder.forward_streaming(normalized, lengths)
        expected = graph.head(encoded).numpy()
    ort = require("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    states = [state.numpy() for state in graph.initial_states(2)]
    outputs = []
    for chunk in range(chunks):
        piece = features[:, stride * chunk : stride * chunk + graph.frames].numpy()
        output, *states = session.run(None, dict(zip(spec.input_names, [piece, *states])))
        outputs.append(output)
    actual = np.concatenate(outputs, axis=1)
    if actual.shape != expected.shape or states[-1].tolist() != [chunks * graph.chunk_size] * 2:
        raise ExportError(
            f"{spec.name}.onnx: {chunks} chunks gave {actual.shape} frames and processed_lens {states[-1].tolist()}, "
            f"PyTorch {expected.shape} and {[chunks * graph.chunk_size] * 2}"
        )
    difference = float(np.abs(actual - expected).max())
    if not difference <= atol:
        raise ExportError(f"{spec.name}.onnx differs from PyTorch streaming by {difference:.3g} > atol {atol:g}")
    return difference


def quantize_int8(source: pathlib.Path, target: pathlib.Path) -> None:
    """onnxruntime's dynamic quantisation: int8 weights of MatMul/Gemm (per channel), activations quantised at run
    time; convolutions stay float (ORT's dynamic ConvInteger kernels are slower than its float convolutions).

    The graph first goes through onnxruntime's quantisation pre-processing (its basic graph optimisations, constant
    folding among them). The exporter leaves some weights behind a Transpose when another node also reads them (a
    Swoosh-then-linear layer reads its weight's row sums too); quantisation takes only MatMuls whose weight is a
    constant, so 80 of Zipformer-M's 282 weight products stayed float32 without it.

    MatMuls whose constant operand is not a 2-D weight stay float: in a chunk graph the positional-encoding
    projections are folded into (heads, dim, frames) constants, which per-channel quantisation cannot handle. Both
    steps keep the source's metadata (sherpa-onnx reads it).
    """
    onnx = require("onnx")
    require("onnxruntime")
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as scratch:
        folded = pathlib.Path(scratch) / "folded.onnx"
        quant_pre_process(str(source), str(folded), skip_symbolic_shape=True, skip_onnx_shape=True)
        graph = onnx.load(str(folded)).graph
        constants = {initializer.name: len(initializer.dims) for initializer in graph.initializer}
        not_weights = [node.name for node in graph.node
                       if node.op_type == "MatMul" and constants.get(node.input[1], 2) != 2]  # fmt: skip
        quantize_dynamic(
            str(folded), str(target), op_types_to_quantize=["MatMul", "Gemm"], per_channel=True,
            weight_type=QuantType.QInt8, nodes_to_exclude=not_weights,
        )  # fmt: skip


def write_tokens(token_list: Sequence[str], path: pathlib.Path) -> None:
    """``symbol id`` lines; ``<space>`` becomes ``▁``, which sherpa-onnx prints as a space."""
    lines = []
    for index, token in enumerate(token_list):
        symbol = "▁" if token == "<space>" else token
        if not symbol or any(character.isspace() for character in symbol):
            raise ExportError(f"token {index} ({token!r}) contains whitespace; tokens.txt cannot hold it")
        lines.append(f"{symbol} {index}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _frontend_description(experiment: LoadedExperiment, stats_copied: bool) -> dict:
    config = experiment.config
    return {
        "frontend": config["frontend"],
        "frontend_conf": dict(config.get("frontend_conf") or {}),
        "input": "mono waveform as float in [-1, 1) (16-bit PCM / 32768)",
        "normalize": config.get("normalize"),
        "normalize_conf": {"stats_file": "feats_stats.npz"} if stats_copied else None,
        "normalization_in_graph": config.get("normalize") is not None,
    }


def export_onnx(
    config_path,
    model_path,
    out_dir,
    quantize: Optional[str] = None,
    opset: int = DEFAULT_OPSET,
    atol: float = 1e-4,
    experiment: Optional[LoadedExperiment] = None,
    log: Callable[[str], None] = logging.info,
    streaming: bool = False,
    chunk_size: Optional[int] = None,
    left_context_frames: Optional[int] = None,
) -> ExportReport:
    """Export an ESPnet experiment (``config.yaml`` + model file of ``asr_train``) to ``out_dir``.

    Args:
        config_path, model_path: the training config and a model file (``valid.acc.ave.pth``, ...).
        out_dir: the folder to create; it must not exist or be empty.
        quantize: None or ``"int8"`` (also write ``*.int8.onnx`` of the encoder-bearing graphs).
        opset: ONNX opset of the graphs.
        atol: largest allowed |onnxruntime - PyTorch| in the self-check.
        experiment: an already loaded experiment (then ``config_path`` / ``model_path`` only name it).
        log: progress messages.
        streaming: export chunk graphs of a causal Zipformer (sherpa-onnx's online layout) instead of
            whole-utterance graphs.
        chunk_size, left_context_frames: the streaming setting in embed (50 Hz) frames; None: the model's decode
            setting (``decode_chunk_size`` / ``decode_left_context_frames``, else the first of the training lists).

    Returns:
        An :class:`ExportReport`.

    Raises:
        ExportError: bad inputs or options, an unexportable model, a failed export or self-check.
        MissingDependencyError: onnx / onnxscript / onnxruntime not installed.
    """
    out_dir = pathlib.Path(out_dir)
    if quantize not in (None, *QUANTIZATIONS):
        raise ExportError(f"--quantize must be one of {list(QUANTIZATIONS)}, got {quantize!r}")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ExportError(f"--out {out_dir} exists and is not an empty folder; choose a new one")
    for module in ("onnx", "onnxscript", "onnxruntime"):
        require(module)
    if experiment is None:
        log(f"loading {config_path} and {model_path}")
        experiment = load_experiment(pathlib.Path(config_path), pathlib.Path(model_path))
    if streaming:
        set_streaming(experiment, chunk_size, left_context_frames)
    elif chunk_size is not None or left_context_frames is not None:
        raise ExportError("--chunk-size / --left-context-frames are options of a streaming export; add --streaming")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        manifest = _write_folder(experiment, staging, quantize, opset, atol, log, streaming)
        staging.chmod(0o755)  # mkdtemp makes it private
        if out_dir.exists():
            out_dir.rmdir()
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportReport(out_dir, manifest)


def set_streaming(experiment: LoadedExperiment, chunk_size: Optional[int], left_context_frames: Optional[int]):
    """Check that the model streams and fix its chunk setting; ExportError naming the option otherwise."""
    encoder = experiment.model.encoder
    if experiment.config["encoder"] != "zipformer" or not encoder.config["causal"]:
        raise ExportError(
            f"--streaming needs a causal Zipformer (encoder: zipformer, encoder_conf causal: true); this model has "
            f"encoder {experiment.config['encoder']}"
            + ("" if experiment.config["encoder"] != "zipformer" else " with causal: false")
        )
    try:
        if chunk_size is not None:
            encoder.set_streaming(chunk_size, left_context_frames)
        elif left_context_frames is not None:
            raise ExportError("--left-context-frames needs --chunk-size")
        encoder.streaming_geometry()
    except ValueError as error:
        raise ExportError(f"--streaming: {error}") from error


def _write_folder(experiment, folder: pathlib.Path, quantize, opset: int, atol: float, log, streaming: bool) -> dict:
    model = experiment.model
    graphs = {}
    specs = build_graphs(experiment, streaming)
    for spec in specs:
        path = folder / f"{spec.name}.onnx"
        log(f"exporting {path.name}")
        export_graph(spec, path, opset)
        difference = check_graph(experiment, spec, path, atol)
        graphs[spec.name] = {
            "file": path.name, "inputs": spec.input_names, "outputs": spec.output_names,
            "check_max_abs_diff": difference,
        }  # fmt: skip
    quantized = {}
    if quantize == "int8":
        for name in ("ctc", "encoder"):
            if name in graphs:
                target = folder / f"{name}.int8.onnx"
                log(f"quantising {target.name}")
                quantize_int8(folder / f"{name}.onnx", target)
                quantized[name] = target.name
    write_tokens(experiment.token_list, folder / "tokens.txt")
    stats = (experiment.config.get("normalize_conf") or {}).get("stats_file")
    stats_copied = experiment.config.get("normalize") == "global_mvn" and stats is not None
    if stats_copied:
        shutil.copyfile(stats, folder / "feats_stats.npz")
    frontend = _frontend_description(experiment, stats_copied)
    (folder / "frontend.yaml").write_text(yaml.safe_dump(frontend, sort_keys=False), encoding="utf-8")
    manifest = {
        "kind": experiment.kind,
        "encoder": experiment.config["encoder"],
        "graphs": graphs,
        "quantized": quantized,
        "tokens": "tokens.txt",
        "blank_id": experiment.token_list.index("<blank>") if "<blank>" in experiment.token_list else 0,
        "unk_id": experiment.token_list.index("<unk>") if "<unk>" in experiment.token_list else -1,
        "context_size": model.decoder.context_size if experiment.kind == "transducer" else None,
        "subsampling_factor": SUBSAMPLING_FACTOR,
        "min_input_frames": minimum_input_frames(model.encoder),
        "feature_dim": model.encoder.input_size,
        "streaming": _streaming_manifest(specs) if streaming else None,
        "opset": opset,
        "exporter": f"torch {torch.__version__} torch.onnx.export(dynamo=True)",
        "hybrid_encoders_version": hybrid_encoders.__version__,
    }
    (folder / "deploy.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
    return manifest


def _streaming_manifest(specs: List[GraphSpec]) -> dict:
    """The chunk setting of a streaming export, for deploy.yaml."""
    graph = next(spec.module for spec in specs if spec.streaming)
    return {
        "chunk_size": graph.chunk_size,
        "left_context_frames": graph.left_context,
        "T": graph.frames,
        "decode_chunk_len": 2 * graph.chunk_size,
        "state_inputs": graph.state_names(),
    }
