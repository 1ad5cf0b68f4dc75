"""repconv.Conv2d against a float64 reference, its arguments and properties,
and the module-level functions."""

import re
import tomllib

import numpy as np
import pytest

import repconv
from conftest import ROOT, bits, conv_ref

ISAS = ("avx512", "avx2", "portable")


def test_version_is_the_crates():
    with open(ROOT / "Cargo.toml", "rb") as f:
        want = tomllib.load(f)["workspace"]["package"]["version"]
    assert repconv.__version__ == want


def test_isa_functions():
    best = repconv.isa_best()
    available = repconv.isa_available()
    assert best in ISAS
    assert available[0] == best
    assert available[-1] == "portable"
    assert set(available) <= set(ISAS)
    assert [i for i in ISAS if i in available] == available  # best first
    assert repconv.isa_default() in available


CASES = [
    # (name, n, c, h, w, o, k, stride, padding, dilation, groups, bias, relu)
    ("1x1 16ch 4x4", 1, 16, 4, 4, 16, (1, 1), 1, 0, 1, 1, True, True),
    ("3x3 pad 1", 2, 8, 9, 11, 12, (3, 3), 1, 1, 1, 1, True, False),
    ("3x3 stride 2", 1, 5, 13, 10, 7, (3, 3), 2, 1, 1, 1, False, True),
    ("depthwise 3x3", 2, 6, 8, 8, 6, (3, 3), 1, 1, 1, 6, True, True),
    ("depthwise 3x3 s2", 1, 4, 9, 7, 4, (3, 3), 2, 1, 1, 4, True, False),
    ("grouped 3x3", 1, 8, 6, 6, 4, (3, 3), 1, 0, 1, 2, True, False),
    ("dilated 3x3", 1, 3, 12, 12, 5, (3, 3), 1, 2, 2, 1, True, True),
    ("pairs", 1, 4, 10, 9, 6, (3, 5), (1, 2), (0, 2), (2, 1), 1, True, False),
    ("7x7 stem-like", 1, 3, 16, 16, 8, (7, 7), 2, 3, 1, 1, True, True),
]


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_matches_reference(case):
    _, n, c, h, w, o, k, stride, padding, dilation, groups, has_bias, relu = case
    rng = np.random.default_rng(len(case[0]))
    x = rng.uniform(-1, 1, (n, c, h, w)).astype(np.float32)
    weight = rng.uniform(-0.5, 0.5, (o, c // groups, *k)).astype(np.float32)
    bias = rng.uniform(-0.5, 0.5, o).astype(np.float32) if has_bias else None
    conv = repconv.Conv2d(
        weight, bias, stride, padding, dilation, groups, activation="relu" if relu else None
    )
    got = conv(x)
    want, mag = conv_ref(x, weight, bias, pair(stride), pair(padding), pair(dilation), groups, relu)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    assert got.shape == want.shape == conv.output_shape(x.shape)
    assert np.all(np.abs(got - want) <= 1e-5 * mag + 1e-6)
    # The properties echo the arguments.
    assert conv.in_channels == c and conv.out_channels == o
    assert conv.kernel_size == k
    assert conv.stride == pair(stride) and conv.padding == pair(padding)
    assert conv.dilation == pair(dilation) and conv.groups == groups
    assert conv.activation == ("relu" if relu else None)
    assert conv.isa == repconv.isa_default()
    assert conv.kernel_name.endswith(conv.isa) or conv.kernel_name.startswith("general")
    assert "repconv.Conv2d(" in repr(conv) and conv.kernel_name in repr(conv)


@pytest.mark.parametrize("isa", ISAS)
def test_every_available_isa(isa):
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, (1, 16, 8, 8)).astype(np.float32)
    weight = rng.uniform(-0.5, 0.5, (24, 16, 3, 3)).astype(np.float32)
    if isa not in repconv.isa_available():
        with pytest.raises(repconv.IsaError, match="does not support"):
            repconv.Conv2d(weight, padding=1, isa=isa)
        return
    conv = repconv.Conv2d(weight, padding=1, isa=isa)
    assert conv.isa == isa
    assert re.search(rf"__{isa}$", conv.kernel_name), conv.kernel_name
    want, mag = conv_ref(x, weight, None, (1, 1), (1, 1), (1, 1), 1, False)
    assert np.all(np.abs(conv(x) - want) <= 1e-5 * mag + 1e-6)
    assert repconv.Conv2d(weight, padding=1, isa="best").isa == repconv.isa_best()


def test_weights_are_converted_and_copied():
    """Weights of any real dtype, layout or array-like convert to float32;
    changing the caller's array afterwards changes nothing."""
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (1, 4, 5, 5)).astype(np.float32)
    w64 = rng.uniform(-1, 1, (3, 4, 3, 3))
    b = [0.5, -0.25, 1.0]
    conv = repconv.Conv2d(np.asfortranarray(w64), b, padding=1)
    want = repconv.Conv2d(w64.astype(np.float32), np.float32(b), padding=1)(x)
    assert np.array_equal(bits(conv(x)), bits(want))
    w64[:] = 0
    assert np.array_equal(bits(conv(x)), bits(want))
    # A nested list works too.
    assert np.array_equal(
        bits(repconv.Conv2d(w64.astype(np.float32).tolist(), b, padding=1)(x)),
        bits(repconv.Conv2d(np.zeros((3, 4, 3, 3), np.float32), b, padding=1)(x)),
    )


def test_threads_give_the_same_bits():
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, (2, 32, 28, 28)).astype(np.float32)
    weight = rng.uniform(-0.2, 0.2, (64, 32, 3, 3)).astype(np.float32)
    conv = repconv.Conv2d(weight, padding=1, activation="relu")
    assert conv.threads == 0 and conv.num_threads >= 1
    base = conv(x)
    for n in (1, 2, 3):
        conv.threads = n
        assert conv.threads == n and conv.num_threads == n
        assert np.array_equal(bits(conv(x)), bits(base))
    conv.threads = 0
    assert conv.threads == 0
    assert np.array_equal(bits(repconv.Conv2d(weight, padding=1, activation="relu", threads=2)(x)),
                          bits(base))


def test_empty_batch_is_a_shape_error():
    """The library refuses zero-sized dimensions; the message says which."""
    conv = repconv.Conv2d(np.ones((2, 3, 1, 1), np.float32))
    with pytest.raises(repconv.ShapeError, match="zero"):
        conv(np.zeros((0, 3, 4, 4), np.float32))
