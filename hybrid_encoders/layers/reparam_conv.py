"""HybridFormer NSR: a re-parameterisable multi-branch depthwise convolution (search / train / deploy).

NSR ("NAS-guided structural re-parameterisation", HybridFormer abstract) keeps the conv module's large depthwise
kernel (31 taps) and adds small parallel depthwise kernels to strengthen local modelling. The paper body is not public;
what follows is the authors' code (``rep_conv.py``, ``darts_wenet.py``, see docs/hybridformer.md) with its bugs fixed:

    y = BN_0(conv_K(x)) + Σ_j a_j · BN_j(conv_{k_j}(x))

* every branch is a depthwise conv without bias followed by its own BatchNorm; kernel 0 is the identity-BN branch
  (RepVGG's BN-only identity); odd kernels are centred, even kernels reach one tap further to the left (offsets
  ``-k//2 .. (k-1)//2``);
* ``search`` mode (DARTS, Liu et al. 2019): ``a = softmax(α)`` over all candidate kernels, with per-layer architecture
  logits ``α`` initialised at ``1e-3 · N(0, 1)`` (near-uniform weights); :meth:`export` ranks the candidates;
* ``train`` mode: a fixed branch list with fixed scales ``a_j`` (the searched weights), trained from scratch. The
  authors' code silently ignores a list of scales; we apply them;
* ``deploy`` mode: one depthwise ``Conv1d`` with K taps **and a bias**. :meth:`reparameterize` folds every BatchNorm
  into its kernel (running statistics), zero-pads each branch kernel to K taps and sums. The authors' folded conv
  defaults to ``bias=False`` and so drops the BatchNorm shifts (max error 2.4); ours always keeps the bias. The fold is
  exact for BatchNorm in eval mode.
"""

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from hybrid_encoders.layers.depthwise_conv import depthwise_conv1d, same_depthwise_conv1d
from hybrid_encoders.layers.time_major_batch_norm import TimeMajorBatchNorm1d

MODES = ("search", "train", "deploy")


class _ConvBranch(nn.Module):
    """One branch: depthwise conv of ``kernel_size`` taps without bias (none for kernel 0) + BatchNorm1d.

    Args:
        channels: C.
        kernel_size: taps k >= 0; 0 = identity-BN branch.
    """

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        self.kernel_size = kernel_size
        # Even k: one more tap on the left than on the right (authors' ``CompensatePad1D``).
        self.left_pad = kernel_size // 2
        self.right_pad = max(kernel_size - 1, 0) // 2
        self.conv = (
            nn.Conv1d(channels, channels, kernel_size, groups=channels, bias=False) if kernel_size > 0 else None
        )
        self.norm = TimeMajorBatchNorm1d(channels)

    def reset_parameters(self) -> None:
        """Conv U(-a, a), a = k^-1/2 (the authors' ``init_weights``, also PyTorch's default); BatchNorm to identity."""
        if self.conv is not None:
            self.conv.reset_parameters()
        self.norm.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> (B, C, T)."""
        if self.conv is None:
            return self.norm(x)
        return self.norm(depthwise_conv1d(x, self.conv.weight, None, self.left_pad, self.right_pad))

    def folded(self, kernel_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """The branch as one centred depthwise kernel of ``kernel_size`` (odd) taps with bias, BatchNorm folded in.

        Returns:
            weight (C, 1, kernel_size) and bias (C,), so that ``conv1d(x, weight, bias, padding=kernel_size // 2,
            groups=C)`` equals the branch with BatchNorm in eval mode.
        """
        norm = self.norm
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)  # (C,)
        bias = norm.bias - norm.running_mean * scale
        if self.conv is None:
            taps = torch.ones(scale.size(0), 1, 1, dtype=scale.dtype, device=scale.device)
        else:
            taps = self.conv.weight
        weight = taps.new_zeros(taps.size(0), 1, kernel_size)
        # Tap i of this branch looks at offset i - left_pad; offset 0 is the centre tap kernel_size // 2.
        start = kernel_size // 2 - self.left_pad
        weight[:, :, start : start + taps.size(-1)] = taps * scale.view(-1, 1, 1)
        return weight, bias


def _branch_name(kernel_size: int) -> str:
    # Named by kernel size, so search-mode weights load by name into a train-mode module built from export().
    return f"kernel{kernel_size}"


class ReparamDepthwiseConv(nn.Module):
    """NSR depthwise convolution with BatchNorm: ``(B, C, T) -> (B, C, T)``, "same" padding, stride 1.

    It replaces the conv module's "depthwise conv + BatchNorm" stage.

    Args:
        channels: C.
        kernel_size: K, taps of the main branch (odd; Squeezeformer: 31).
        mode: ``"search"``, ``"train"`` or ``"deploy"`` (see the module docstring).
        candidates: search mode: kernel sizes of the searched branches (distinct, 0 <= k <= K; 0 = identity-BN).
        rep_list: train mode: kernel sizes of the kept branches (distinct, 0 <= k <= K); may be empty.
        rep_alphas: train mode: fixed scale of each kept branch (same length as ``rep_list``); None = all 1.0.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 31,
        mode: str = "train",
        candidates: Sequence[int] = (0, 2, 3, 4, 5, 6),
        rep_list: Sequence[int] = (),
        rep_alphas: Optional[Sequence[float]] = None,
    ):
        super().__init__()
        if channels <= 0:
            raise ValueError(f"ReparamDepthwiseConv: channels must be > 0, got {channels}")
        if kernel_size <= 0 or kernel_size % 2 != 1:
            raise ValueError(f"ReparamDepthwiseConv: kernel_size must be odd and > 0, got {kernel_size}")
        if mode not in MODES:
            raise ValueError(f"ReparamDepthwiseConv: mode must be one of {list(MODES)}, got {mode!r}")
        self.channels = channels
        self.kernel_size = kernel_size
        self.mode = mode
        if mode == "deploy":
            self.fused = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)
            return
        kernels = list(candidates) if mode == "search" else list(rep_list)
        key = "candidates" if mode == "search" else "rep_list"
        check_branch_kernels("ReparamDepthwiseConv", key, kernels, kernel_size)
        if mode == "search" and not kernels:
            raise ValueError("ReparamDepthwiseConv: search mode needs at least one entry in candidates")
        self.main = _ConvBranch(channels, kernel_size)
        self.branches = nn.ModuleDict({_branch_name(k): _ConvBranch(channels, k) for k in kernels})
        if mode == "search":
            self.arch_logits = nn.Parameter(torch.empty(len(kernels)))
            self._reset_arch_logits()
        else:
            scales = [1.0] * len(kernels) if rep_alphas is None else [float(a) for a in rep_alphas]
            if len(scales) != len(kernels):
                raise ValueError(
                    f"ReparamDepthwiseConv: rep_alphas has {len(scales)} entries but rep_list has {len(kernels)}"
                )
            self.branch_scales = scales

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}, mode={self.mode}"

    def _reset_arch_logits(self) -> None:
        # DARTS / the authors' darts_wenet.py: α = 1e-3 · N(0, 1), so the initial softmax weights are ~uniform.
        with torch.no_grad():
            self.arch_logits.normal_(0.0, 1e-3)

    def reset_parameters(self) -> None:
        """Re-initialise every branch (and α in search mode); called by the encoder's ESPnet initialisation hook."""
        if self.mode == "deploy":
            self.fused.reset_parameters()
            return
        self.main.reset_parameters()
        for branch in self.branches.values():
            branch.reset_parameters()
        if self.mode == "search":
            self._reset_arch_logits()

    @property
    def branch_kernels(self) -> List[int]:
        """Kernel sizes of the parallel branches, in order (empty in deploy mode)."""
        if self.mode == "deploy":
            return []
        return [branch.kernel_size for branch in self.branches.values()]

    def branch_weights(self) -> torch.Tensor:
        """(n_branches,) weights ``a_j``: softmax(α) in search mode, the fixed scales in train mode."""
        if self.mode == "search":
            return torch.softmax(self.arch_logits, dim=0)
        if self.mode == "train":
            reference = self.main.norm.weight
            return torch.tensor(self.branch_scales, dtype=reference.dtype, device=reference.device)
        raise RuntimeError("ReparamDepthwiseConv: a deploy-mode module has no branches")

    def arch_parameters(self) -> List[nn.Parameter]:
        """The architecture logits α (search mode), to be optimised apart from the weights; empty otherwise."""
        return [self.arch_logits] if self.mode == "search" else []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> (B, C, T)."""
        if self.mode == "deploy":
            return same_depthwise_conv1d(self.fused, x)
        y = self.main(x)
        if len(self.branches) == 0:
            return y
        weights = self.branch_weights()
        for weight, branch in zip(weights, self.branches.values()):
            y = y + weight * branch(x)
        return y

    def export(self, top_k: Optional[int] = None) -> Dict[str, list]:
        """Search mode: the candidates ranked by their softmax weight, as train-mode arguments.

        Args:
            top_k: keep the ``top_k`` heaviest candidates; None keeps all (the authors' searched example keeps all
                five candidates with their softmax weights, which sum to 1).

        Returns:
            ``{"rep_list": [k, ...], "rep_alphas": [a, ...]}``, heaviest first; the weights are not renormalised.
        """
        if self.mode != "search":
            raise RuntimeError(f"ReparamDepthwiseConv: export() needs mode 'search', this module is {self.mode!r}")
        if top_k is not None and not 0 < top_k <= len(self.branches):
            raise ValueError(f"ReparamDepthwiseConv: top_k must be in [1, {len(self.branches)}], got {top_k}")
        weights = self.branch_weights().detach().cpu().tolist()
        order = sorted(range(len(weights)), key=lambda i: -weights[i])[:top_k]
        kernels = self.branch_kernels
        return {"rep_list": [kernels[i] for i in order], "rep_alphas": [weights[i] for i in order]}

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Switch to deploy mode in place: fold BatchNorms (running statistics), pad to K taps, sum with the weights.

        The deploy-mode output equals the multi-branch output of BatchNorm in eval mode. Idempotent.
        """
        if self.mode == "deploy":
            return
        weight, bias = self.main.folded(self.kernel_size)
        for scale, branch in zip(self.branch_weights(), self.branches.values()):
            branch_weight, branch_bias = branch.folded(self.kernel_size)
            weight = weight + scale * branch_weight
            bias = bias + scale * branch_bias
        fused = nn.Conv1d(
            self.channels, self.channels, self.kernel_size, padding=self.kernel_size // 2, groups=self.channels
        ).to(device=weight.device, dtype=weight.dtype)
        fused.weight.copy_(weight)
        fused.bias.copy_(bias)
        for name in ("main", "branches", "arch_logits", "branch_scales"):
            if hasattr(self, name):
                delattr(self, name)
        self.fused = fused
        self.mode = "deploy"


def check_branch_kernels(owner: str, key: str, kernels: Sequence[int], kernel_size: int) -> None:
    """Raise a ValueError naming ``key`` unless ``kernels`` is a list of distinct branch kernel sizes in [0, K]."""
    if not isinstance(kernels, (list, tuple)):
        raise ValueError(f"{owner}: {key} must be a list of kernel sizes, got {kernels!r}")
    for k in kernels:
        if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k <= kernel_size:
            raise ValueError(
                f"{owner}: {key} entries must be integers in [0, kernel_size={kernel_size}] "
                f"(0 = identity-BN branch), got {k!r}"
            )
    if len(set(kernels)) != len(kernels):
        raise ValueError(f"{owner}: {key} has repeated kernel sizes: {list(kernels)}")
