"""Every error path: a clear exception of the documented class with the
library's message, never a crash."""

import numpy as np
import pytest

import repconv
from conftest import read_safetensors


@pytest.fixture(scope="module")
def conv():
    w = np.random.default_rng(0).uniform(-1, 1, (8, 4, 3, 3)).astype(np.float32)
    return repconv.Conv2d(w, padding=1)


@pytest.fixture(scope="module")
def fused(s0_fused_path):
    return repconv.MobileOne.load(s0_fused_path)


@pytest.fixture(scope="module")
def state(s0_fused_path):
    return read_safetensors(s0_fused_path)


def x4(*shape, dtype=np.float32):
    return np.zeros(shape, dtype=dtype)


def test_hierarchy():
    for name, builtin in [
        ("ShapeError", ValueError),
        ("DTypeError", TypeError),
        ("LayoutError", ValueError),
        ("ParamError", ValueError),
        ("IsaError", ValueError),
        ("PrecisionError", ValueError),
        ("FormatError", ValueError),
        ("IoError", OSError),
    ]:
        cls = getattr(repconv, name)
        assert issubclass(cls, repconv.Error) and issubclass(cls, builtin), name
        assert cls.__module__ == "repconv" and cls.__doc__
    assert issubclass(repconv.Error, Exception)


# --- Conv2d construction -----------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, exc, message",
    [
        (dict(weight=np.zeros((8, 4, 3))), repconv.ShapeError, r"weight: expected a 4-D array"),
        (dict(weight=[["a"]]), repconv.DTypeError, r"weight: cannot convert"),
        (dict(bias=np.zeros(7)), repconv.ShapeError, r"bias: expected shape \(8,\)"),
        (dict(stride=0), repconv.ParamError, r"stride"),
        (dict(stride=-1), repconv.ParamError, r"stride: must be >= 0, got -1"),
        (dict(stride="2"), TypeError, r"stride"),
        (dict(padding=(1, 2, 3)), TypeError, r"padding"),
        (dict(dilation=0), repconv.ParamError, r"dilation"),
        (dict(groups=3), repconv.ParamError, r"groups"),
        (dict(groups=-2), repconv.ParamError, r"groups: must be >= 0"),
        (dict(activation="gelu"), repconv.ParamError, r"activation: expected None or \"relu\""),
        (dict(isa="sse9"), repconv.IsaError, r"unknown ISA \"sse9\""),
        (dict(threads=-1), repconv.ParamError, r"threads: must be >= 0"),
        (dict(threads=5000), repconv.ParamError, r"threads: at most 1024"),
    ],
)
def test_conv_construction(kwargs, exc, message):
    args = dict(weight=np.zeros((8, 4, 3, 3), np.float32))
    args.update(kwargs)
    with pytest.raises(exc, match=message):
        repconv.Conv2d(**args)


def test_conv_threads_setter(conv):
    with pytest.raises(repconv.ParamError, match="threads"):
        conv.threads = -3
    with pytest.raises(repconv.ParamError, match="at most 1024"):
        conv.threads = 1025
    assert conv.threads == 0


# --- forward passes ----------------------------------------------------------


def test_conv_input_errors(conv):
    with pytest.raises(repconv.DTypeError, match=r"x: expected dtype float32, got float64"):
        conv(x4(1, 4, 5, 5, dtype=np.float64))
    with pytest.raises(TypeError, match="float32"):  # also a TypeError
        conv(x4(1, 4, 5, 5, dtype=np.float16))
    with pytest.raises(repconv.DTypeError, match=r"x: expected a numpy.ndarray of float32, got list"):
        conv([[[[0.0]]]])
    with pytest.raises(repconv.DTypeError, match="float32"):
        conv(x4(1, 4, 5, 5).astype(">f4"))  # big-endian
    with pytest.raises(repconv.ShapeError, match=r"x: expected a 4-D NCHW array, got shape \(4, 5, 5\)"):
        conv(x4(4, 5, 5))
    with pytest.raises(repconv.ShapeError, match=r"input channels: expected shape \[1, 4, 5, 5\], got \[1, 3, 5, 5\]"):
        conv(x4(1, 3, 5, 5))  # channels
    with pytest.raises(repconv.LayoutError, match="C-contiguous"):
        conv(x4(1, 4, 5, 10)[:, :, :, ::2])
    with pytest.raises(repconv.LayoutError, match="C-contiguous"):
        conv(np.asfortranarray(x4(2, 4, 5, 5)))
    misaligned = np.frombuffer(bytearray(4 * 100 + 1), dtype=np.float32, offset=1)
    with pytest.raises(repconv.LayoutError, match="aligned"):
        conv(misaligned.reshape(1, 4, 5, 5))
    small = repconv.Conv2d(np.zeros((2, 4, 3, 3), np.float32))  # no padding
    with pytest.raises(repconv.ShapeError):
        small(x4(1, 4, 2, 2))


def test_conv_out_errors(conv):
    x = x4(1, 4, 5, 5)
    with pytest.raises(repconv.ShapeError, match=r"out: expected shape \(1, 8, 5, 5\), got \(1, 8, 5, 4\)"):
        conv(x, out=x4(1, 8, 5, 4))
    with pytest.raises(repconv.DTypeError, match="out: expected dtype float32"):
        conv(x, out=x4(1, 8, 5, 5, dtype=np.float64))
    with pytest.raises(repconv.LayoutError, match="out: expected a C-contiguous"):
        conv(x, out=x4(1, 8, 5, 10)[..., ::2])
    ro = x4(1, 8, 5, 5)
    ro.flags.writeable = False
    with pytest.raises(repconv.LayoutError, match="read-only"):
        conv(x, out=ro)
    with pytest.raises(repconv.DTypeError, match="out: expected a numpy.ndarray"):
        conv(x, out=[0.0])


def test_out_overlapping_input_is_refused():
    same = repconv.Conv2d(np.ones((4, 4, 1, 1), np.float32))
    x = np.ones((1, 4, 5, 5), np.float32)
    with pytest.raises(repconv.LayoutError, match="overlaps"):
        same(x, out=x)
    buf = np.ones((2, 4, 5, 5), np.float32)
    with pytest.raises(repconv.LayoutError, match="overlaps"):
        same(buf[0:1], out=buf[0:1])
    # Disjoint halves of one buffer are fine.
    same(buf[0:1], out=buf[1:2])
    assert np.all(buf[1] == 4.0)


def test_output_shape_errors(conv, fused):
    with pytest.raises(repconv.ShapeError, match="4-D"):
        conv.output_shape((1, 4, 5))
    with pytest.raises(repconv.ShapeError):
        fused.output_shape((1, 4, 64, 64))


def test_network_forward_errors(fused):
    with pytest.raises(repconv.ShapeError, match="input"):
        fused(x4(1, 4, 64, 64))
    with pytest.raises(repconv.ShapeError, match=r"out: expected a 2-D output array, got shape \(1, 10, 1, 1\)"):
        fused(x4(1, 3, 64, 64), out=x4(1, 10, 1, 1))
    with pytest.raises(repconv.ShapeError, match=r"out: expected shape \(1, 10\), got \(2, 10\)"):
        fused(x4(1, 3, 64, 64), out=x4(2, 10))
    with pytest.raises(repconv.DTypeError):
        fused(x4(1, 3, 64, 64, dtype=np.float64))
    with pytest.raises(repconv.ShapeError, match="zero"):
        fused(x4(1, 3, 0, 64))
    with pytest.raises(repconv.ParamError, match="threads"):
        fused.threads = -1


# --- checkpoints -------------------------------------------------------------


def test_load_errors(tmp_path, s0_fused_path):
    with pytest.raises(repconv.IoError, match="No such file") as e:
        repconv.MobileOne.load(tmp_path / "missing.safetensors")
    assert isinstance(e.value, OSError)
    with pytest.raises(repconv.IoError, match="not a regular file"):
        repconv.MobileOne.load(tmp_path)
    with pytest.raises(repconv.IoError, match="not a regular file"):
        repconv.MobileOne.load("/dev/zero")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(repconv.FormatError, match="not a safetensors file"):
        repconv.MobileOne.load(garbage)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(s0_fused_path.read_bytes()[:100_000])
    with pytest.raises(repconv.FormatError, match="truncated"):
        repconv.MobileOne.load(truncated)
    with pytest.raises(repconv.IsaError, match="unknown ISA"):
        repconv.MobileOne.load(s0_fused_path, isa="neon")
    with pytest.raises(repconv.ParamError, match="threads"):
        repconv.MobileOne.load(s0_fused_path, threads=-1)
    with pytest.raises(TypeError):
        repconv.MobileOne.load(12)


def test_state_dict_errors(state):
    missing = dict(state)
    del missing["stages.1.0.reparam_conv.bias"]
    with pytest.raises(repconv.FormatError, match=r"missing tensor stages.1.0.reparam_conv.bias"):
        repconv.MobileOne.from_state_dict(missing)
    extra = dict(state, **{"head.extra": np.zeros(3, np.float32)})
    with pytest.raises(repconv.FormatError, match=r"unexpected tensor head.extra"):
        repconv.MobileOne.from_state_dict(extra)
    wrong = dict(state, **{"head.fc.bias": np.zeros(11, np.float32)})
    with pytest.raises(repconv.FormatError, match=r"tensor head.fc.bias: expected shape \[10\]"):
        repconv.MobileOne.from_state_dict(wrong)
    bad = dict(state)
    bad["head.fc.bias"] = bad["head.fc.bias"].astype(np.float32)
    bad["head.fc.bias"][3] = np.nan
    with pytest.raises(repconv.FormatError, match=r"head.fc.bias: element 3 is NaN"):
        repconv.MobileOne.from_state_dict(bad)
    with pytest.raises(repconv.DTypeError, match=r"state_dict\[\"head.fc.bias\"\]: cannot convert"):
        repconv.MobileOne.from_state_dict(dict(state, **{"head.fc.bias": "ten"}))
    with pytest.raises(TypeError, match="keys must be str"):
        repconv.MobileOne.from_state_dict({1: np.zeros(1)})
    with pytest.raises(TypeError, match="expected a mapping"):
        repconv.MobileOne.from_state_dict([("head.fc.bias", np.zeros(10))])
    with pytest.raises(repconv.FormatError):
        repconv.MobileOne.from_state_dict({})


def test_save_errors(tmp_path, fused):
    with pytest.raises(repconv.IoError):
        fused.save(tmp_path / "no" / "such" / "dir.safetensors")
    path = tmp_path / "exists.safetensors"
    path.write_bytes(b"keep")
    with pytest.raises(repconv.IoError, match="already exists"):
        fused.save(path, overwrite=False)
    assert path.read_bytes() == b"keep"


def test_benchmark_errors(fused, s0_train_path):
    with pytest.raises(repconv.ParamError, match="already fused"):
        fused.benchmark(size=64, runs=1, peak=False)
    train = repconv.MobileOne.load(s0_train_path)
    with pytest.raises(repconv.ParamError, match="runs: must be >= 1"):
        train.benchmark(size=64, runs=0, peak=False)
    with pytest.raises(repconv.ParamError, match="size: must be >= 0"):
        train.benchmark(size=-1, peak=False)
    with pytest.raises(repconv.ShapeError):
        train.benchmark(x4(1, 4, 64, 64), runs=1, peak=False)
