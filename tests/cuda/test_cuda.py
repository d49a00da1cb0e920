"""On a CUDA GPU: every encoder computes on the GPU what it computes on the CPU, and ESPnet's own trainer trains our
systems on one GPU with ``--use_amp true`` (bf16 autocast on Ampere and newer, fp16 with a gradient scaler before).

Skipped, saying so, where torch sees no GPU (CI has none); run with ``pytest tests/cuda`` on a machine that has one.
"""

import math
import re

import pytest
import torch
import yaml

from conftest import TINY_TOKENS, asr_train_arguments, run_espnet, tiny_training_config, write_random_corpus
from hybrid_encoders.encoders.hybridformer import HybridformerEncoder
from hybrid_encoders.encoders.squeezeformer import SqueezeformerEncoder
from hybrid_encoders.encoders.zipformer import ZipformerEncoder

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA GPU")

ENCODERS = {
    "squeezeformer:xs": lambda: SqueezeformerEncoder(80, preset="xs"),
    "hybridformer:s": lambda: HybridformerEncoder(80, preset="s"),
    "zipformer:s": lambda: ZipformerEncoder(80, preset="s"),
    "zipformer:s causal": lambda: ZipformerEncoder(
        80, preset="s", causal=True, chunk_size=[16], left_context_frames=[64], decode_chunk_size=16,
        decode_left_context_frames=64,
    ),
}


@pytest.fixture
def exact_fp32():
    """Plain fp32 matrix products on the GPU (no TF32), restored afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _forward_backward(encoder, xs, ilens):
    """Eval-mode forward (no random draws) and the gradients of the output's mean square: (out, olens, grads)."""
    encoder.eval()
    encoder.zero_grad(set_to_none=True)
    out, olens, _ = encoder(xs, ilens)
    out.square().mean().backward()
    grads = {name: p.grad.detach().cpu() for name, p in encoder.named_parameters() if p.grad is not None}
    return out.detach().cpu(), olens.cpu(), grads


@pytest.mark.parametrize("name", list(ENCODERS))
def test_encoder_on_cuda_equals_cpu(name, exact_fp32):
    torch.manual_seed(0)
    encoder = ENCODERS[name]()
    generator = torch.Generator().manual_seed(1)
    ilens = torch.tensor([301, 237, 160])
    xs = torch.randn(3, 301, 80, generator=generator)

    cpu_out, cpu_olens, cpu_grads = _forward_backward(encoder, xs, ilens)
    gpu_out, gpu_olens, gpu_grads = _forward_backward(encoder.cuda(), xs.cuda(), ilens.cuda())

    assert torch.equal(gpu_olens, cpu_olens)
    torch.testing.assert_close(gpu_out, cpu_out, rtol=1e-4, atol=1e-4)
    assert gpu_grads.keys() == cpu_grads.keys() and cpu_grads
    for key, grad in cpu_grads.items():
        torch.testing.assert_close(gpu_grads[key], grad, rtol=1e-3, atol=1e-5, msg=lambda m: f"{key}: {m}")


def _epoch_losses(log: str) -> list:
    """The training loss of every ``<n>epoch results: [train] ... loss=...`` line of an ESPnet log."""
    losses = []
    for line in log.splitlines():
        if "epoch results:" in line:
            train = line.split("[train]", 1)[1].split("[valid]", 1)[0]
            losses.append(float(re.search(r"(?<![_\w])loss=([^,\s]+)", train).group(1)))
    return losses


@pytest.mark.slow
@pytest.mark.parametrize("system", ["zipformer", "zipformer_transducer", "squeezeformer"])
def test_espnet_trains_on_one_gpu_with_amp(tmp_path, system):
    train = write_random_corpus(tmp_path / "train", count=8, seed=0)
    valid = write_random_corpus(tmp_path / "valid", count=2, seed=1)
    (tmp_path / "tokens.txt").write_text("\n".join(TINY_TOKENS) + "\n")
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(tiny_training_config(system)))
    arguments = asr_train_arguments(train, valid) + [
        "--train_shape_file", f"{train}/wav.scp", "--valid_shape_file", f"{valid}/wav.scp",
    ]
    arguments[arguments.index("--ngpu") + 1] = "1"

    log = run_espnet(
        "asr_train", *arguments, "--use_amp", "true", "--max_epoch", "2", "--output_dir", "exp", cwd=tmp_path
    )

    losses = _epoch_losses(log)
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses), losses
    skipped = log.count("Skipping updating the model")
    assert skipped < 8, f"{skipped} of 8 optimizer steps skipped for non-finite gradients"
    state = torch.load(tmp_path / "exp" / "valid.loss.best.pth", map_location="cpu")
    assert all(torch.isfinite(value).all() for value in state.values() if value.is_floating_point())
