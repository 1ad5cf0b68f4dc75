"""Checks that timm loads the checkpoints repconv writes.

    REPCONV_EXPORT_DIR=/tmp/rt cargo test --release --test golden -- --ignored export_for_timm_roundtrip
    .venv/bin/python tools/check_timm_roundtrip.py /tmp/rt

(venv as in tools/make_fixtures.py.) The test writes a random repconv S0 (10
classes) as `ours_train.safetensors` (train form) and `ours_fused.safetensors`
(reparameterized), an input and repconv's logits for both. This script loads
the train file into a fresh `timm.create_model("mobileone_s0")` and the fused
file into `reparameterize_model(timm.create_model(...))`, both with
`load_state_dict(strict=True)`, and compares timm's logits with ours. It also
shows that strict loading works with and without the `num_batches_tracked`
counters (PyTorch fills in a missing counter), and that the train file's keys
are exactly timm's `state_dict()` keys.
"""

import sys

import torch
import timm
from safetensors.torch import load_file
from timm.utils.model import reparameterize_model

torch.set_default_dtype(torch.float32)
torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)

d = sys.argv[1]
io = load_file(f"{d}/ours_io.safetensors")
x = io["input"]
ok = True


def report(what, got, want):
    global ok
    diff = (got - want).abs().max().item()
    rel = diff / want.abs().max().item()
    good = rel <= 1e-5
    ok &= good
    print(f"{what}: max |timm - repconv| {diff:.3e} (relative {rel:.3e}) {'OK' if good else 'FAIL'}")


with torch.no_grad():
    train = load_file(f"{d}/ours_train.safetensors")
    model = timm.create_model("mobileone_s0", num_classes=10).eval()
    assert set(train) == set(model.state_dict()), "train keys differ from timm's state_dict"
    model.load_state_dict(train, strict=True)
    report("train form, strict load", model(x), io["logits_multi"])

    no_counters = {k: v for k, v in train.items() if not k.endswith("num_batches_tracked")}
    model2 = timm.create_model("mobileone_s0", num_classes=10).eval()
    model2.load_state_dict(no_counters, strict=True)
    report("train form without num_batches_tracked, strict load", model2(x), io["logits_multi"])

    fused = load_file(f"{d}/ours_fused.safetensors")
    fmodel = reparameterize_model(timm.create_model("mobileone_s0", num_classes=10)).eval()
    assert set(fused) == set(fmodel.state_dict()), "fused keys differ from timm's state_dict"
    fmodel.load_state_dict(fused, strict=True)
    report("fused form into reparameterize_model(...), strict load", fmodel(x), io["logits_fused"])
    report("timm's own reparameterization of our train file", reparameterize_model(model)(x), io["logits_fused"])

print("all OK" if ok else "FAILED")
sys.exit(0 if ok else 1)
