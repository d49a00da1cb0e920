"""Chunk-by-chunk Zipformer inference with cached state: the machinery of ``ZipformerEncoder.forward_streaming``.

Each call appends every utterance's new feature frames to its buffer, then encodes, in rounds, every chunk that has
become computable: a chunk of C embed frames as soon as its 2C + 13 feature frames are there, and after an
utterance's final piece its remaining frames (the last chunk may be shorter). The utterances that have a chunk of the
same shape in a round are encoded together as one batch; their caches are gathered and scattered back.

A chunk goes through the same modules as the full-utterance forward, in the same order, with each layer's attention
extended by the cached keys and values of the left context (masked where an utterance has not produced that many
frames yet) and each causal convolution by its cached inputs. Because the full forward's attention and convolutions
are chunk-causal and its embed looks at most 13 feature frames ahead, both give the same frames (up to float
rounding): the full forward of an utterance alone, in eval mode, with the same chunk setting.
"""

from typing import List, Optional, Sequence, Tuple, Union

import torch

from hybrid_encoders.encoders.zipformer import NAME, DownsampledZipformerStack, _convert_num_channels
from hybrid_encoders.layers.masking import check_encoder_input
from hybrid_encoders.streaming.zipformer_state import LayerCache, ZipformerStreamingState


def forward_streaming(
    encoder,
    xs: torch.Tensor,
    ilens: torch.Tensor,
    states: Optional[ZipformerStreamingState],
    is_final: Union[bool, torch.Tensor],
) -> Tuple[torch.Tensor, torch.Tensor, ZipformerStreamingState]:
    """See :meth:`hybrid_encoders.encoders.zipformer.ZipformerEncoder.forward_streaming`."""
    if not encoder.config["causal"]:
        raise ValueError(f"{NAME}: forward_streaming needs a causal model (encoder_conf causal: true)")
    if encoder.training:
        raise ValueError(f"{NAME}: forward_streaming runs in eval mode; call encoder.eval() first")
    check_encoder_input(xs, ilens, encoder.input_size, NAME)
    geometry = encoder.streaming_geometry()
    batch = xs.size(0)
    finals = _final_flags(is_final, batch)
    signature = {
        **{key: value for key, value in encoder.config.items() if not key.startswith("decode_")},
        "input_size": encoder.input_size,
        "streaming_chunk_size": geometry.chunk_size,
        "left_context_frames": geometry.left_context_frames,
    }
    if states is None:
        states = ZipformerStreamingState.initial(encoder, signature, batch, xs.device, xs.dtype)
    elif not isinstance(states, ZipformerStreamingState):
        raise ValueError(f"{NAME}: states must be None or a ZipformerStreamingState, got {type(states).__name__}")
    else:
        states.check(encoder, signature, batch)
    lengths = [int(length) for length in ilens]
    for index, (length, finished) in enumerate(zip(lengths, states.finished)):
        if finished and length > 0:
            raise ValueError(
                f"{NAME}: utterance {index} of the batch got {length} feature frames after its final piece "
                "(is_final=True); start a new utterance with states=None"
            )
    state = ZipformerStreamingState(
        signature=states.signature,
        encoder=states.encoder,
        features=[
            torch.cat((buffered, xs[index, :length])) if length else buffered
            for index, (buffered, length) in enumerate(zip(states.features, lengths))
        ],
        embed_left=states.embed_left,
        layers=list(states.layers),
        processed=list(states.processed),
        received=[received + length for received, length in zip(states.received, lengths)],
        finished=list(states.finished),
    )
    with torch.no_grad():
        outputs = _encode_ready_chunks(encoder, state, finals, geometry.chunk_size, geometry.left_context_frames)
    for index, final in enumerate(finals):
        if final:
            state.finished[index] = True
            state.features[index] = state.features[index][:0]
    olens = torch.tensor([sum(piece.size(0) for piece in pieces) for pieces in outputs], device=xs.device)
    ys = xs.new_zeros(batch, int(olens.max()) if batch else 0, encoder.output_size())
    for index, pieces in enumerate(outputs):
        if pieces:
            ys[index, : int(olens[index])] = torch.cat(pieces)
    return ys, olens, state


def _final_flags(is_final: Union[bool, torch.Tensor], batch: int) -> List[bool]:
    if isinstance(is_final, torch.Tensor):
        if is_final.shape != (batch,) or is_final.dtype != torch.bool:
            raise ValueError(f"{NAME}: is_final must be a bool or a ({batch},) bool tensor, got {is_final!r}")
        return is_final.tolist()
    if not isinstance(is_final, bool):
        raise ValueError(f"{NAME}: is_final must be a bool or a ({batch},) bool tensor, got {is_final!r}")
    return [is_final] * batch


def _next_chunk(state: ZipformerStreamingState, index: int, final: bool, chunk_size: int, embed):
    """(embed frames t, embed frames computed before the ConvNeXt, whether it is a sole short chunk) of the next
    chunk utterance ``index`` can encode now, or None."""
    if state.finished[index]:
        return None
    start, context = state.processed[index], embed.convnext.time_padding
    remaining = (state.received[index] - embed.CONV_CONTEXT) // 2 - start  # ConvNeXt inputs computable now
    if remaining >= chunk_size + context:
        return chunk_size, chunk_size + context, False
    if not final or remaining <= 0:
        return None
    frames = min(chunk_size, remaining)  # the utterance's end: no right context beyond it (zeros, as in forward)
    return frames, min(frames + context, remaining), start == 0 and frames < chunk_size


def _encode_ready_chunks(
    encoder, state: ZipformerStreamingState, finals: Sequence[bool], chunk_size: int, left_context: int
) -> List[List[torch.Tensor]]:
    """Encode every chunk that can be encoded now, updating ``state``; per utterance, its new output pieces."""
    outputs: List[List[torch.Tensor]] = [[] for _ in range(state.batch_size)]
    while True:
        groups = {}
        for index, final in enumerate(finals):
            shape = _next_chunk(state, index, final, chunk_size, encoder.encoder_embed)
            if shape is not None:
                groups.setdefault(shape, []).append(index)
        if not groups:
            return outputs
        for (frames, computed, sole_short), lanes in groups.items():
            encoded = _encode_chunk(encoder, state, lanes, frames, computed, sole_short, chunk_size, left_context)
            for lane, output in zip(lanes, encoded):
                outputs[lane].append(output)


def _encode_chunk(
    encoder,
    state: ZipformerStreamingState,
    lanes: List[int],
    frames: int,
    computed: int,
    sole_short: bool,
    chunk_size: int,
    left_context: int,
) -> torch.Tensor:
    """Encode the next chunk of ``frames`` embed frames of the utterances ``lanes`` and advance their state
    (see :func:`encode_chunk` for the arguments).

    Returns:
        (len(lanes), ceil(frames / 2), D) output frames.
    """
    device = state.embed_left.device
    index = None if lanes == list(range(state.batch_size)) else torch.tensor(lanes, device=device)
    starts = [state.processed[lane] for lane in lanes]
    features = torch.stack(
        [state.features[lane][: 2 * computed + encoder.encoder_embed.CONV_CONTEXT] for lane in lanes]
    )
    embed_left = state.embed_left if index is None else state.embed_left.index_select(0, index)
    caches = [cache.select(index) for cache in state.layers]
    output, embed_left, caches = encode_chunk(
        encoder, features, embed_left, caches, torch.tensor(starts, device=device), frames, computed, sole_short,
        chunk_size, left_context, history_complete=min(starts) >= left_context,
    )  # fmt: skip
    state.embed_left = embed_left if index is None else state.embed_left.index_copy(0, index, embed_left)
    state.layers = [old.merge(index, new) for old, new in zip(state.layers, caches)]
    for lane in lanes:
        state.processed[lane] += frames
        state.features[lane] = state.features[lane][2 * frames :]
    return output


def encode_chunk(
    encoder,
    features: torch.Tensor,
    embed_left: torch.Tensor,
    caches: List[LayerCache],
    starts: torch.Tensor,
    frames: int,
    computed: int,
    sole_short: bool,
    chunk_size: int,
    left_context: int,
    history_complete: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor, List[LayerCache]]:
    """One chunk of B' utterances through the encoder with their caches: tensors in, tensors out (no Python state,
    so that it traces into a graph; see :mod:`hybrid_encoders.deploy.streaming_graphs`).

    Args:
        features: (B', 2 * computed + 7, F) the chunk's feature frames and its right context.
        embed_left: (B', 128, 3, F') the embed's ConvNeXt inputs before the chunk.
        caches: per layer, the (B', ...) caches of :class:`LayerCache`.
        starts: (B',) int64, embed frames each utterance has encoded before this chunk (masks the cached frames
            from before its start).
        frames: embed frames of the chunk (``chunk_size`` except at an utterance's end).
        computed: ConvNeXt inputs the features give (fewer than ``frames + 3`` at an utterance's end, where zeros
            follow).
        sole_short: the whole utterance is this one chunk, shorter than ``chunk_size``, which the full forward's
            convolutions treat as a chunk of its own length.
        chunk_size, left_context: the decode setting, in embed frames (the left context in whole chunks).
        history_complete: every utterance has at least ``left_context`` frames before the chunk (no mask needed).

    Returns:
        (B', ceil(frames / 2), D) output frames, the new ``embed_left``, the new caches.
    """
    embed = encoder.encoder_embed
    context = embed.convnext.time_padding
    convolved = embed.convolve(features)  # (B', 128, computed, F')
    pieces = [embed_left, convolved]
    if computed < frames + context:
        pieces.append(convolved.new_zeros(*convolved.shape[:2], frames + context - computed, convolved.size(3)))
    window = torch.cat(pieces, dim=2)  # (B', 128, context + frames + context, F')
    x = embed.project(convolved[:, :, :frames] + embed.convnext.residual_branch(window, 0))  # (B', frames, C_0)
    new_embed_left = window[:, :, frames : frames + context]

    stacks = encoder.encoder
    outputs, new_caches = [], []
    layer = 0
    for stack, factor, dim in zip(stacks.encoders, stacks.downsampling_factor, stacks.encoder_dim):
        x_in = _convert_num_channels(x, dim)
        downsampled = isinstance(stack, DownsampledZipformerStack)
        layers = stack.encoder if downsampled else stack
        h = stack.downsample(x_in) if downsampled else x_in
        stack_frames, cached = h.size(1), left_context // factor
        pos_emb = layers.encoder_pos(stack_frames, device=h.device, dtype=h.dtype, left_context=cached)
        mask = None if history_complete else _cache_mask(starts, factor, cached, stack_frames)
        conv_chunk = stack_frames if sole_short else chunk_size // factor
        for zipformer_layer in layers.layers:
            h, new_cache = _layer_chunk(zipformer_layer, h, pos_emb, mask, conv_chunk, caches[layer])
            new_caches.append(new_cache)
            layer += 1
        x = stack.out_combiner(x_in, stack.upsample(h)[:, :frames]) if downsampled else h
        outputs.append(x)
    return stacks.downsample_output(stacks.full_dim_output(outputs)), new_embed_left, new_caches


def _cache_mask(starts: torch.Tensor, factor: int, cached: int, frames: int) -> torch.Tensor:
    """(B', 1, 1, cached + frames) bool, True at the cached frames from before an utterance's start."""
    valid = torch.clamp(torch.div(starts, factor, rounding_mode="floor"), max=cached)
    positions = torch.arange(cached + frames, device=starts.device)
    return (positions < (cached - valid)[:, None])[:, None, None, :]


def _layer_chunk(
    layer, x: torch.Tensor, pos_emb: torch.Tensor, mask: Optional[torch.Tensor], conv_chunk: int, cache: LayerCache
) -> Tuple[torch.Tensor, LayerCache]:
    """One Zipformer layer (eval mode) on a chunk (B', t, C) with its left-context cache, in the order of
    ``ZipformerLayer.forward``: FF1, non-linear attention, attention 1, conv 1, FF2, mid bypass, attention 2, conv 2,
    FF3, BiasNorm, bypass."""
    x_orig = x
    attention = layer.self_attn_weights
    queries, keys, positional = attention.project(x)
    keys = torch.cat((cache.keys, keys), dim=1)
    weights = attention.attention_weights(queries, keys, positional, pos_emb, mask)  # (B', H, t, L + t)
    x = x + layer.feed_forward1(x)
    gated, multiplier = layer.nonlin_attention.project(x)
    nonlin_values = torch.cat((cache.nonlin_values, gated), dim=1)
    x = x + layer.nonlin_attention.attend(nonlin_values, multiplier, weights[:, 0])
    values1 = torch.cat((cache.values1, layer.self_attn1.in_proj(x)), dim=1)
    x = x + layer.self_attn1.attend(values1, weights)
    convolved, conv1 = _conv_chunk(layer.conv_module1, x, cache.conv1, conv_chunk)
    x = x + convolved
    x = x + layer.feed_forward2(x)
    x = layer.bypass_mid(x_orig, x)
    values2 = torch.cat((cache.values2, layer.self_attn2.in_proj(x)), dim=1)
    x = x + layer.self_attn2.attend(values2, weights)
    convolved, conv2 = _conv_chunk(layer.conv_module2, x, cache.conv2, conv_chunk)
    x = x + convolved
    x = x + layer.feed_forward3(x)
    x = layer.bypass(x_orig, layer.norm(x))
    kept = cache.keys.size(1)
    tails = (tensor[:, tensor.size(1) - kept :] for tensor in (keys, nonlin_values, values1, values2))
    return x, LayerCache(*tails, conv1, conv2)


def _conv_chunk(module, x: torch.Tensor, cache: torch.Tensor, chunk_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """A Zipformer convolution module on a chunk (B', t, C) with its (B', C, k // 2) cache."""
    convolved, cache = module.depthwise_conv.forward_chunk(module.gate(x).transpose(1, 2), cache, chunk_size)
    return module.output(convolved), cache
