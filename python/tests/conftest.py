"""Shared helpers: the committed fixtures (read without torch or the
safetensors package), the Rust API's expected logits, a float64 reference
convolution."""

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"

# Set by .ci/run: a directory where capi's make_expected example (the Rust
# API, not these bindings) wrote input.f32 and expected.f32 per case.
EXPECTED_ENV = "REPCONV_PY_EXPECTED_DIR"

_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I64": np.int64}


def read_safetensors(path):
    """Every tensor of a safetensors file as a numpy array (F32, F16, I64;
    BF16 widened to float32)."""
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        a = np.frombuffer(body[start:end], dtype=_DTYPES[info["dtype"]]).reshape(info["shape"])
        if info["dtype"] == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        out[name] = a.copy()
    return out


def expected_dir():
    """The Rust API's outputs, or a loud skip outside CI (a failure in CI)."""
    d = os.environ.get(EXPECTED_ENV)
    if d:
        return Path(d)
    message = (
        f"{EXPECTED_ENV} is not set: the bit-equality tests against the Rust API "
        "need the logits .ci/run makes with capi's make_expected example"
    )
    if os.environ.get("CI"):
        pytest.fail(message)
    print(f"\n*** SKIPPED: {message} ***")
    pytest.skip(message)


def conv_ref(x, w, b, stride, padding, dilation, groups, relu):
    """PyTorch's conv2d in float64, and the same sum of |terms| (for the
    tolerance), by accumulating one kernel tap at a time."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    w64 = w.astype(np.float64)
    out = np.zeros((n, o, oh, ow))
    mag = np.zeros((n, o, oh, ow))
    og = o // groups
    for g in range(groups):
        xs = xp[:, g * cg : (g + 1) * cg]
        ws = w64[g * og : (g + 1) * og]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh,
                           j * dw : j * dw + sw * (ow - 1) + 1 : sw]
                out[:, g * og : (g + 1) * og] += np.einsum("nchw,oc->nohw", patch, ws[:, :, i, j])
                mag[:, g * og : (g + 1) * og] += np.einsum(
                    "nchw,oc->nohw", np.abs(patch), np.abs(ws[:, :, i, j])
                )
    if b is not None:
        out += b.astype(np.float64)[None, :, None, None]
        mag += np.abs(b.astype(np.float64))[None, :, None, None]
    if relu:
        out = np.maximum(out, 0.0)
    return out, mag


def bits(a):
    """The float32 array's bit patterns, for bit-for-bit comparisons."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    return a.view(np.uint32)


@pytest.fixture(scope="session")
def s0_io():
    return read_safetensors(FIXTURES / "s0.io.safetensors")


@pytest.fixture(scope="session")
def s0_train_path():
    return FIXTURES / "s0.train.safetensors"


@pytest.fixture(scope="session")
def s0_fused_path():
    return FIXTURES / "s0.fused.safetensors"
