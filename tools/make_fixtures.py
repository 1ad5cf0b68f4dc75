"""Golden fixtures for tests/golden.rs, computed by PyTorch with timm's MobileOne.

Never needed to run the tests: the fixtures are committed in tests/fixtures/.
To regenerate them, create a virtual environment once and run this script from
the repository root:

    python3 -m venv .venv && .venv/bin/pip install torch timm safetensors numpy
    .venv/bin/python tools/make_fixtures.py

(Made with torch 2.x CPU, timm 1.0.31.)

What it writes (all names timm's, from timm/models/byobnet.py):

* One block of each kind, taken from timm modules: `stem` (3->48, 3x3 s2),
  `dw_s1_skip` (S0 stages.0.2: depthwise 48, s1, k=4, BN skip), `dw_s2` (S0
  stages.0.0: depthwise 48, s2, k=4), `pw_skip` (S0 stages.0.1: 48->48 1x1,
  k=4, skip), `pw_noskip` (S0 stages.1.1: 48->128 1x1, k=4), and `se` (a timm
  MobileOneBlock built with S4's layer functions and SE: depthwise 64, s1,
  k=2, skip, SE with 8 reduced channels). For each `<kind>`:
    - `<kind>.train.safetensors`: the block's train-form state_dict in
      block-relative names (f32, `num_batches_tracked` included, as timm has it);
    - `<kind>.fused.safetensors`: timm's reparameterized block (f32,
      `reparam_conv.*`, plus `attn.*` for SE);
    - `<kind>.io.safetensors`: `input`, `output_multi` (train form, eval mode)
      and `output_fused` (timm's reparameterized block).
* A whole `mobileone_s0` with 10 classes at a 2x3x64x64 input. At f32 its
  train-form and fused weights would take 13 MB, over the 12 MB budget, so
  every weight is rounded to f16 *before* PyTorch computes the outputs:
    - `s0.train.safetensors`: train-form state_dict, f16;
    - `s0.fused.safetensors`: timm's reparameterized state_dict (computed in f32
      from the f16 train weights), rounded to f16;
    - `s0.io.safetensors`: `input`, `output_multi` (train form), `output_fused`
      (timm's reparameterized model, f32 fused weights), `output_fused_f16`
      (the reparameterized model with the stored f16 fused weights).

Every BatchNorm gets non-trivial statistics: conv weights get a random
per-output-channel gain (log-uniform in [0.3, 3)), gamma is uniform in
[0.5, 1.5) / sqrt(branches), beta in [-0.2, 0.2); running statistics are
measured block by block on a random calibration batch (momentum 1 in train
mode, on the activations of the already finished blocks before it), then the
mean is shifted by up to 0.2 standard deviations and the variance scaled by a
log-uniform factor in [0.5, 2), so activations stay normalised through the 44
blocks, like a trained network's.
"""

import copy
import math
import os
from functools import partial

import torch
import timm
from safetensors.torch import save_file
from timm.layers import get_attn
from timm.models.byobnet import MobileOneBlock, get_layer_fns, model_cfgs
from timm.utils.model import reparameterize_model

torch.set_default_dtype(torch.float32)
torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)
torch.manual_seed(20240605)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")


def log_uniform(shape, lo, hi):
    return torch.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * torch.rand(shape))


def branches_of(module):
    """Number of BN branches summed in the MobileOneBlock that owns a BN."""
    k = len(module.conv_kxk)
    return k + (module.conv_scale is not None) + (module.identity is not None)


@torch.no_grad()
def randomize(model, calib):
    """Random gains and BN affine parameters, then running statistics measured
    block by block (in forward order) on the activations the already
    randomized blocks before it produce from `calib`, then perturbed."""
    blocks = [m for m in model.modules() if isinstance(m, MobileOneBlock)]
    h = calib
    for blk in blocks:
        norm = 1.0 / math.sqrt(branches_of(blk))
        bns = []
        for cna in list(blk.conv_kxk) + ([blk.conv_scale] if blk.conv_scale is not None else []):
            w = cna.conv.weight
            w.mul_(log_uniform((w.shape[0], 1, 1, 1), 0.3, 3.0))
            bns.append(cna.bn)
        if blk.identity is not None:
            bns.append(blk.identity)
        for bn in bns:
            c = bn.num_features
            bn.weight.copy_((0.5 + torch.rand(c)) * norm)
            bn.bias.copy_((torch.rand(c) - 0.5) * 0.4 * norm)
            bn.momentum = 1.0
        blk.train()
        blk(h)  # momentum 1: running stats = this batch's stats
        blk.eval()
        for bn in bns:
            c = bn.num_features
            bn.momentum = 0.1
            bn.running_mean.add_((torch.rand(c) - 0.5) * 0.4 * bn.running_var.sqrt())
            bn.running_var.mul_(log_uniform((c,), 0.5, 2.0))
            bn.num_batches_tracked.fill_(1)
        h = blk(h)
    model.eval()


@torch.no_grad()
def round_f16(model):
    for t in model.state_dict().values():
        if t.is_floating_point():
            t.copy_(t.half().float())


def state(module, dtype=None):
    out = {}
    for k, v in module.state_dict().items():
        v = v.detach().clone().contiguous()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        out[k] = v
    return out


def save(name, tensors):
    path = os.path.join(OUT, name)
    save_file(tensors, path, metadata={"format": "pt"})
    print(f"{name:32s} {os.path.getsize(path):>10,d} bytes")


@torch.no_grad()
def block_fixture(kind, block, x):
    block = copy.deepcopy(block).eval()
    y_multi = block(x)
    fused = copy.deepcopy(block)
    fused.reparameterize()
    y_fused = fused(x)
    save(f"{kind}.train.safetensors", state(block))
    save(f"{kind}.fused.safetensors", state(fused))
    save(f"{kind}.io.safetensors", {"input": x, "output_multi": y_multi, "output_fused": y_fused})


@torch.no_grad()
def main():
    os.makedirs(OUT, exist_ok=True)

    # Whole S0, randomized and calibrated; blocks are taken from it at f32.
    s0 = timm.create_model("mobileone_s0", num_classes=10)
    randomize(s0, torch.randn(8, 3, 64, 64))
    block_fixture("stem", s0.stem, torch.randn(2, 3, 16, 16))
    block_fixture("dw_s2", s0.stages[0][0], torch.randn(2, 48, 11, 11))
    block_fixture("pw_skip", s0.stages[0][1], torch.randn(2, 48, 8, 8))
    block_fixture("dw_s1_skip", s0.stages[0][2], torch.randn(2, 48, 10, 10))
    block_fixture("pw_noskip", s0.stages[1][1], torch.randn(2, 48, 6, 6))

    # An SE block the way mobileone_s4 builds its SE blocks (layer functions
    # of the S4 config, attn_layer 'se'), at a small width.
    cfg = model_cfgs["mobileone_s4"]
    layers = get_layer_fns(cfg)
    layers.attn = partial(get_attn("se"))
    se_block = MobileOneBlock(64, 64, kernel_size=3, stride=1, group_size=1,
                              num_conv_branches=2, layers=layers)
    randomize(se_block, torch.randn(8, 64, 7, 7))
    with torch.no_grad():
        for p in se_block.attn.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    block_fixture("se", se_block, torch.randn(2, 64, 7, 7))

    # The whole S0 at f16-rounded weights.
    round_f16(s0)
    x = torch.randn(2, 3, 64, 64)
    y_multi = s0(x)
    fused = reparameterize_model(copy.deepcopy(s0))
    y_fused = fused(x)
    fused16 = copy.deepcopy(fused)
    round_f16(fused16)
    y_fused16 = fused16(x)
    save("s0.train.safetensors", state(s0, torch.float16))
    save("s0.fused.safetensors", state(fused16, torch.float16))
    save("s0.io.safetensors", {"input": x, "output_multi": y_multi, "output_fused": y_fused,
                               "output_fused_f16": y_fused16})
    print("max |logit|", y_multi.abs().max().item(),
          "max |multi - fused| (torch)", (y_multi - y_fused).abs().max().item())
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"total {total:,d} bytes")


if __name__ == "__main__":
    main()
