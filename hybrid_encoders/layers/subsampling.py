"""The convolutional front ends that subsample (B, T, F) features in time, behind one factory used by every encoder.

    subsampling = build_subsampling("dw_striding", input_size=80, output_size=256)
    ys, out_lengths = subsampling(xs, lengths)          # (B, T, 80) -> (B, T', 256)

A front end is a :class:`Subsampling`: besides ``forward`` it reports ``output_lengths(lengths)`` and
``min_input_length`` (the shortest input that still yields one output frame), so that an encoder can raise
``TooShortUttError`` before running anything. Adding a kind is one class plus one entry in :data:`SUBSAMPLING_KINDS`.
"""

from typing import Dict, Tuple, Type

import torch
from torch import nn

from hybrid_encoders.layers.bias_norm import BiasNorm
from hybrid_encoders.layers.checkpointing import checkpointed
from hybrid_encoders.layers.depthwise_conv import same_depthwise_conv2d
from hybrid_encoders.layers.export_mode import is_exporting
from hybrid_encoders.layers.lean_autograd import activation_conv, pointwise_conv
from hybrid_encoders.layers.swoosh import SWOOSH_ACTIVATIONS, SwooshL, SwooshR, scale_initial_weights
from hybrid_encoders.regularization.balancer import Balancer, ScaleGrad
from hybrid_encoders.regularization.scheduled_float import FloatLike, ScheduledFloat
from hybrid_encoders.regularization.skipping import SharedDropout
from hybrid_encoders.regularization.whiten import Whiten


class Subsampling(nn.Module):
    """Base class of the front ends: (B, T, input_size) features -> (B, T', output_size) frames."""

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """(B,) input lengths -> (B,) output lengths."""
        raise NotImplementedError

    @property
    def min_input_length(self) -> int:
        """The shortest input length that gives at least one output frame."""
        length = 1
        while int(self.output_lengths(torch.tensor([length]))[0]) < 1:
            length += 1
        return length

    def forward(self, xs: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


def _strided_length(lengths):
    """Length (int or tensor) after a kernel-3, stride-2 convolution padded by 1 on both sides: floor((L-1)/2) + 1."""
    return (lengths - 1) // 2 + 1


def _zero_padded_frames(
    x: torch.Tensor, lengths: torch.Tensor, first_frame: int = 0, in_place: bool = False
) -> torch.Tensor:
    """Zero the time steps of a (B, C, T, F) image whose frame index is negative or ``>= lengths[b]``.

    ``x`` may be a time slice of a longer image that starts at frame ``first_frame`` (the chunked inference path),
    so step t has frame index ``first_frame + t``. Nothing is done when no step needs zeroing. ``in_place`` (only
    for tensors nobody else holds and autograd does not need) saves one copy of ``x``.
    """
    frames = x.size(2)
    if first_frame >= 0 and not is_exporting() and int(lengths.min()) >= first_frame + frames:
        return x
    index = torch.arange(first_frame, first_frame + frames, device=x.device)
    valid = ((index >= 0) & (index < lengths[:, None]))[:, None, :, None].to(x.dtype)  # (B, 1, T, 1)
    return x.mul_(valid) if in_place else x * valid


class DepthwiseStridingSubsampling(Subsampling):
    """Squeezeformer's 4x front end (paper Sec. 3.2, "depthwise separable subsampling"; NeMo ``dw_striding``).

    ``conv3x3 (1 -> C, stride 2) -> ReLU -> depthwise conv3x3 (stride 2) -> pointwise conv1x1 -> ReLU ->
    flatten (C x F/4) -> Linear -> output_size``. Each convolution pads one step on both sides (NeMo; the TF code
    pads bottom/right only, which changes only which frames a kernel reads). Time steps at or beyond a sequence's
    length are zeroed before each convolution, so an utterance gives the same valid frames alone and inside a padded
    batch. Lengths: ``L -> floor((L - 1) / 2) + 1`` twice (= ceil(ceil(L / 2) / 2)).

    Args:
        input_size: feature dimension F (80 for fbank).
        output_size: model dimension d of the output frames.
        channels: convolution channels C; ``None`` means ``output_size`` (every paper configuration).
        chunk_frames: without autograd (inference), compute the output this many output frames at a time, so the
            (B, C, T/2, F/2) first-convolution image never exists whole (at 60 s, batch 2, C = 256 it is ~245 MB
            and set the encoder's peak memory). The convolutions are local, so the result equals the
            unchunked one. ``0`` or ``None`` disables chunking; training (autograd on) never chunks.
    """

    def __init__(self, input_size: int, output_size: int, channels: int = None, chunk_frames: int = 100):
        super().__init__()
        channels = output_size if channels is None else channels
        if channels <= 0:
            raise ValueError(f"dw_striding subsampling: channels must be > 0, got {channels}")
        chunk_frames = 0 if chunk_frames is None else chunk_frames
        if not isinstance(chunk_frames, int) or chunk_frames < 0:
            raise ValueError(f"dw_striding subsampling: chunk_frames must be an int >= 0 or None, not {chunk_frames!r}")
        self.chunk_frames = chunk_frames
        self.conv1 = nn.Conv2d(1, channels, kernel_size=3, stride=2, padding=1)
        self.depthwise = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1, groups=channels)
        self.pointwise = nn.Conv2d(channels, channels, kernel_size=1)
        reduced_features = _strided_length(_strided_length(input_size))
        self.out = nn.Linear(channels * reduced_features, output_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Paper (TF) initialisation: U(-a, a) for weights and biases with a = fan_in^-1/2 of each layer's kernel.

        The TF code hard-codes a = 5120^-1/2 for the output Linear, which is (20 C)^-1/2 for its C = 256 model;
        we use (20 C)^-1/2 (its fan-in) for every size.
        """
        for layer, fan_in in (
            (self.conv1, 9),
            (self.depthwise, 9),
            (self.pointwise, self.pointwise.in_channels),
            (self.out, self.out.in_features),
        ):
            bound = fan_in**-0.5
            nn.init.uniform_(layer.weight, -bound, bound)
            nn.init.uniform_(layer.bias, -bound, bound)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return _strided_length(_strided_length(lengths))

    def _first_conv(self, x: torch.Tensor, time_padding: int = 1) -> torch.Tensor:
        """conv1 + ReLU of a (B, 1, T, F) image, as im2col + one matrix product (a 1-channel 3x3 convolution is
        slow in oneDNN); the result is a (B, C, T', F/2) view of (B, T', F/2, C) memory, i.e. channels-last, the
        layout in which the following depthwise convolution is fast. ``time_padding`` zero frames are added on
        both time sides (1 as in conv1; the chunked path passes 0 and supplies the frames itself), so
        ``T' = (T + 2 * time_padding - 3) // 2 + 1``."""
        batch, _, frames, bins = x.shape
        columns = nn.functional.unfold(x, kernel_size=3, padding=(time_padding, 1), stride=2)  # (B, 9, T' * F/2)
        rows = columns.transpose(1, 2).reshape(-1, 9)  # (B T' F/2, 9)
        # the bias added by the product itself: one pass less over the (B T' F/2, C) result than a separate sum
        y = torch.relu_(torch.addmm(self.conv1.bias, rows, self.conv1.weight.view(self.conv1.out_channels, 9).T))
        out_frames = (frames + 2 * time_padding - 3) // 2 + 1
        return y.view(batch, out_frames, _strided_length(bins), -1).permute(0, 3, 1, 2)

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T', F') -> (B, T', output_size): flatten channel-major (index c * F' + f), then the Linear.

        A channels-last ``x`` (what the convolutions give) is flattened frequency-major instead, its memory order,
        with the Linear's weight columns reordered to match: the same product without copying the image, and the
        gradient reaches the convolutions in their own layout (2 x 30 s: 295 -> 256 ms forward + backward).
        """
        batch, channels, frames, features = x.shape
        if is_exporting() or not x.is_contiguous(memory_format=torch.channels_last):
            return self.out(x.transpose(1, 2).reshape(batch, frames, channels * features))
        weight = self.out.weight.view(-1, channels, features).transpose(1, 2).reshape(-1, features * channels)
        return nn.functional.linear(x.permute(0, 2, 3, 1).reshape(batch, frames, -1), weight, self.out.bias)

    def _chunked_forward(
        self, xs: torch.Tensor, lengths: torch.Tensor, half_lengths: torch.Tensor, out_lengths: torch.Tensor
    ) -> torch.Tensor:
        """The inference path of :meth:`forward`, ``chunk_frames`` output frames at a time, same values.

        Output frame t reads conv1 frames 2t-1 .. 2t+1, each of which reads input frames 2s-1 .. 2s+1, so output
        frames [a, b) need conv1 frames [2a-1, 2b) and input frames [4a-3, 4b). The input gets 3 zero frames on
        both sides (the convolutions' zero padding, and enough for the last chunk: 4 * ceil(T/4) <= T + 3), and
        every conv1 frame outside [0, half_length) is zeroed, as the unchunked path's padding and masking do.
        """
        frames = _strided_length(_strided_length(xs.size(1)))
        x = _zero_padded_frames(xs.unsqueeze(1), lengths)  # (B, 1, T, F)
        x = nn.functional.pad(x, (0, 0, 3, 3))  # input frame n is row n + 3
        chunks = []
        for start in range(0, frames, self.chunk_frames):
            end = min(start + self.chunk_frames, frames)
            h = self._first_conv(x[:, :, 4 * start : 4 * end + 3], time_padding=0)  # conv1 frames [2 start - 1, 2 end)
            h = _zero_padded_frames(h, half_lengths, first_frame=2 * start - 1, in_place=True)
            h = nn.functional.conv2d(
                h, self.depthwise.weight, self.depthwise.bias, stride=2, padding=(0, 1), groups=h.size(1)
            )
            h = torch.relu_(self.pointwise(h))  # (B, C, end - start, F/4)
            h = _zero_padded_frames(h, out_lengths, first_frame=start, in_place=True)
            chunks.append(self._project(h))
        return torch.cat(chunks, dim=1)

    def forward(self, xs: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, T, F) features and (B,) lengths -> (B, ceil(ceil(T/2)/2), output_size) frames and their lengths."""
        half_lengths = _strided_length(lengths)
        out_lengths = _strided_length(half_lengths)
        if self.chunk_frames and not torch.is_grad_enabled() and not is_exporting():  # the chunk loop needs T
            return self._chunked_forward(xs, lengths, half_lengths, out_lengths), out_lengths
        x = _zero_padded_frames(xs.unsqueeze(1), lengths)  # (B, 1, T, F)
        x = _zero_padded_frames(self._first_conv(x), half_lengths)  # (B, C, T/2, F/2)
        x = torch.relu_(self.pointwise(self.depthwise(x)))  # (B, C, T/4, F/4)
        return self._project(_zero_padded_frames(x, out_lengths)), out_lengths


SUBSAMPLING_KINDS: Dict[str, Type[Subsampling]] = {
    "dw_striding": DepthwiseStridingSubsampling,
}


def build_subsampling(kind: str, input_size: int, output_size: int, **options) -> Subsampling:
    """Build the front end named ``kind`` (a key of :data:`SUBSAMPLING_KINDS`).

    Args:
        kind: front-end name, e.g. ``"dw_striding"``.
        input_size: feature dimension of the input.
        output_size: dimension of the output frames.
        **options: keyword arguments of that kind's class.

    Raises:
        ValueError: unknown kind.
    """
    if kind not in SUBSAMPLING_KINDS:
        raise ValueError(f"subsampling must be one of {sorted(SUBSAMPLING_KINDS)}, got {kind!r}")
    return SUBSAMPLING_KINDS[kind](input_size, output_size, **options)


class _ConvNeXt(nn.Module):
    """Residual ConvNeXt block on a (B, C, T, F) image (Zipformer embed, spec §2): depthwise 7x7 -> 1x1 (3C) ->
    SwooshL -> 1x1 (C), added to the input; randomly dropped per sequence while training."""

    def __init__(self, channels: int, hidden_ratio: int = 3, kernel_size: Tuple[int, int] = (7, 7)):
        super().__init__()
        hidden = channels * hidden_ratio
        padding = ((kernel_size[0] - 1) // 2, (kernel_size[1] - 1) // 2)
        self.depthwise_conv = nn.Conv2d(channels, channels, kernel_size, padding=padding, groups=channels)
        self.pointwise_conv1 = nn.Conv2d(channels, hidden, kernel_size=1)
        self.activation = SwooshL()
        self.pointwise_conv2 = nn.Conv2d(hidden, channels, kernel_size=1)
        self.layerdrop_rate = ScheduledFloat((0.0, 0.2), (20000.0, 0.015))
        self.hidden_balancer = Balancer(
            hidden, channel_dim=1, min_positive=0.3, max_positive=1.0, min_abs=0.75, max_abs=5.0
        )
        self.out_balancer = Balancer(
            channels, channel_dim=1, min_positive=0.4, max_positive=0.6, min_abs=1.0, max_abs=6.0
        )
        self.out_whiten = Whiten(1, 5.0, prob=(0.025, 0.25), grad_scale=0.01)
        self.reset_parameters()

    def _inference(self, x: torch.Tensor) -> torch.Tensor:
        """Eval-mode forward, same values, with an in-place residual."""
        return self.residual_branch(x, self.time_padding).add_(x)

    @property
    def time_padding(self) -> int:
        """Frames the block reads on each side of a frame (3): the streaming embed's left cache and lookahead."""
        return self.depthwise_conv.padding[0]

    def residual_branch(self, x: torch.Tensor, time_padding: int) -> torch.Tensor:
        """The block's branch (eval mode), in channels-last layout, in which the depthwise 7x7 and the 1x1
        convolutions run much faster on CPU: (B, C, T, F) -> (B, C, T + 2 time_padding - 6, F). ``time_padding``
        zero frames are added at both time ends (3 as in the forward; 0 when a stream supplies its context frames)."""
        conv = self.depthwise_conv
        y = nn.functional.conv2d(
            x.contiguous(memory_format=torch.channels_last), conv.weight, conv.bias,
            padding=(time_padding, conv.padding[1]), groups=conv.groups,
        )  # fmt: skip
        return self.pointwise_conv2(self.activation(self.pointwise_conv1(y)))

    def reset_parameters(self) -> None:
        """icefall: default init, the last 1x1 convolution scaled by 0.01 (a near-identity block at start)."""
        self.pointwise_conv2.reset_parameters()
        scale_initial_weights(self.pointwise_conv2, 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, F) -> (B, C, T, F)."""
        if not self.training:
            return self._inference(x)
        y = self.hidden_balancer(pointwise_conv(same_depthwise_conv2d(self.depthwise_conv, x), self.pointwise_conv1))
        # SwooshL -> 1x1 conv keeping only the pre-activation for backward (the widest tensor of the embed)
        y = activation_conv(y, SWOOSH_ACTIVATIONS["swoosh_l"], self.pointwise_conv2)
        drop_rate = float(self.layerdrop_rate)
        if drop_rate != 0.0:
            y = y * (torch.rand(x.size(0), 1, 1, 1, device=x.device) > drop_rate).to(y.dtype)
        x = self.out_balancer(x + y)
        if x.requires_grad:  # the whitening metric wants channels last
            x = self.out_whiten(x.transpose(1, 3)).transpose(1, 3)
        return x


class Conv2dConvNeXtSubsampling(Subsampling):
    """Zipformer's 2x front end (icefall Conv2dSubsampling, spec §2): three 3x3 convolutions with SwooshR, a
    ConvNeXt block, flatten, Linear, BiasNorm, dropout.

    Lengths: ``L -> (L - 7) // 2`` (so at least 9 input frames); features F -> ((F - 1) // 2 - 1) // 2.
    The 7x7 ConvNeXt sees padded frames, so, as in icefall, a padded utterance's last frames differ slightly from
    the same utterance alone. Child names match icefall's state_dict (``conv.0/4/7``, ``convnext``, ``out``,
    ``out_norm``); the ``conv`` Sequential keeps icefall's gradient-only modules at the other indices.

    Args:
        input_size: feature dimension F (>= 7).
        output_size: output dimension (Zipformer's first stack dimension).
        dropout: dropout on the output, one mask per sequence shared over time (float or ScheduledFloat).
        layer1_channels, layer2_channels, layer3_channels: convolution channels.
        recompute: while training, keep only the input features and the convolutions' output for the backward pass
            and recompute the rest there, in two segments (:func:`hybrid_encoders.layers.checkpointing.checkpointed`,
            same random draws and gradients). The front end works at twice the encoder's frame rate on 128 x 19
            images: at batch 2 x 30 s it would keep 258 MB, a fifth of Zipformer-M's kept training memory, for one
            more forward pass of the front end (7 % of a CPU training step there).
    """

    def __init__(
        self,
        input_size: int,
        output_size: int,
        dropout: FloatLike = 0.1,
        layer1_channels: int = 8,
        layer2_channels: int = 32,
        layer3_channels: int = 128,
        recompute: bool = False,
    ):
        super().__init__()
        if input_size < 7:
            raise ValueError(f"conv2d_convnext subsampling: input_size must be >= 7, got {input_size}")
        self.conv = nn.Sequential(
            nn.Conv2d(1, layer1_channels, kernel_size=3, padding=(0, 1)),
            ScaleGrad(0.2),
            Balancer(layer1_channels, channel_dim=1, max_abs=1.0),
            SwooshR(),
            nn.Conv2d(layer1_channels, layer2_channels, kernel_size=3, stride=2),
            Balancer(layer2_channels, channel_dim=1, max_abs=4.0),
            SwooshR(),
            nn.Conv2d(layer2_channels, layer3_channels, kernel_size=3, stride=(1, 2)),
            Balancer(layer3_channels, channel_dim=1, max_abs=4.0),
            SwooshR(),
        )
        self.convnext = _ConvNeXt(layer3_channels)
        out_width = ((input_size - 1) // 2 - 1) // 2
        self.out = nn.Linear(out_width * layer3_channels, output_size)
        self.out_whiten = Whiten(1, ScheduledFloat((0.0, 4.0), (20000.0, 8.0), default=4.0), (0.025, 0.25), 0.02)
        self.out_norm = BiasNorm(output_size)
        self.dropout = SharedDropout(dropout, shared_dim=1)
        self.recompute = recompute

    CONV_CONTEXT = 7  # input frames the three "valid" convolutions consume: frame t reads input 2t .. 2t + 8

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return torch.div(lengths - self.CONV_CONTEXT, 2, rounding_mode="floor")

    @property
    def streaming_lookahead(self) -> int:
        """Input frames that output frames [s, s + n) need beyond input frame 2(s + n) - 1: the convolutions read
        7 more, the ConvNeXt 3 output frames (6 input frames) more: 13."""
        return self.CONV_CONTEXT + 2 * self.convnext.time_padding

    def forward(self, xs: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, T, F) features, (B,) lengths -> (B, (T - 7) // 2, output_size) frames and their lengths."""
        # two recomputed segments: while the backward pass is in the second, the first's activations are not held
        recompute = self.recompute and self.training
        images = checkpointed(self.convolve, xs, enabled=recompute)
        return checkpointed(self._frames, images, enabled=recompute), self.output_lengths(lengths)

    def _frames(self, images: torch.Tensor) -> torch.Tensor:
        """Convolution output (B, 128, T', F') -> ConvNeXt -> projection, (B, T', output_size)."""
        return self.project(self.convnext(images))

    def convolve(self, xs: torch.Tensor) -> torch.Tensor:
        """The three convolutions, (B, T, F) -> (B, 128, (T - 7) // 2, F'): "valid" in time, so frame t depends on
        input frames 2t .. 2t + 8 only, and a stream can compute any frame range from its input frames."""
        return self.conv(xs.unsqueeze(1))

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """ConvNeXt output (B, 128, T', F') -> flatten (index c * F' + f) -> Linear -> BiasNorm -> (B, T', D)."""
        batch, channels, frames, features = x.shape
        x = self.out(x.transpose(1, 2).reshape(batch, frames, channels * features))
        return self.dropout(self.out_norm(self.out_whiten(x)))


SUBSAMPLING_KINDS["conv2d_convnext"] = Conv2dConvNeXtSubsampling
