"""precision="bf16": the 1x1 convolutions on the bf16 kernel, against a
float64 reference on bf16-rounded operands and against the f32 logits; the
typed error where bf16 cannot run; bad precision names.

The library reads REPCONV_BF16 once per process, so everything that depends
on it runs in a child interpreter with the variable set (``emulated``: the
bf16 kernels' software model, so these tests run on any CPU; the hardware
where the CPU has AVX512_BF16) or removed.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import repconv
from conftest import FIXTURES, bits, conv_ref, read_safetensors

# bf16 logits against f32 logits, relative to the largest f32 |logit|. bf16
# keeps 8 significant bits (a relative rounding of at most 2^-8, about 4e-3,
# per weight and input), and the errors of S0's 1x1 layers add up through
# the network: measured 2.8e-2 for the fused S0 fixture and 5.1e-2 for its
# multi-branch form (cli/tests/cli.rs measures the same). 0.1 leaves a
# margin of two; a broken kernel is off by the logits' own size, and f32
# passed off as bf16 fails the "differs" checks.
BF16_REL_TOL = 0.1

ENV = "REPCONV_BF16"


def native_bf16():
    """Whether a child process runs bf16 on the hardware: a CPU with
    AVX512_BF16 (and the AVX-512 features the kernels use) and the avx512
    kernels as the default ISA."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    needed = {"avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx2", "fma"}
    return needed <= flags and repconv.isa_default() == "avx512"


def bf16_impl():
    return "avx512bf16" if native_bf16() else "emulated"


def round_bf16(a):
    """float32 rounded to bfloat16 (nearest even), as vcvtneps2bf16 does for
    the finite, normal values these tests use."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    return r.astype(np.uint32).view(np.float32).reshape(np.shape(a))


def test_round_bf16_rounds_to_nearest_even():
    x = np.array([1.0, 1.0 + 2**-8, 1.0 + 3 * 2**-8, 1.0 + 2**-9, -3.0e-3], np.float32)
    # 1 + 2^-8 is halfway between 1 and 1 + 2^-7: even is 1. 1 + 3 * 2^-8 is
    # halfway between 1 + 2^-7 and 1 + 2^-6: even is 1 + 2^-6.
    want = np.array([1.0, 1.0, 1.0 + 2**-6, 1.0, -3.0e-3], np.float32)
    got = round_bf16(x)
    assert np.array_equal(got[:4], want[:4])
    assert got[4] != x[4] and abs(got[4] - x[4]) <= 2**-8 * abs(x[4])
    assert np.all(got.view(np.uint32) & 0xFFFF == 0)


def child(code, bf16, tmp_path):
    """Runs ``code`` in a new interpreter with REPCONV_BF16=``bf16`` (removed
    for None) and returns what it wrote to ``out.json`` (``OUT`` in the
    code); arrays go to ``OUT_DIR``."""
    env = dict(os.environ)
    env.pop(ENV, None)
    if bf16 is not None:
        env[ENV] = bf16
    script = tmp_path / "child.py"
    script.write_text(
        "import json, sys\nimport numpy as np\nimport repconv\n"
        f"OUT = {str(tmp_path / 'out.json')!r}\nOUT_DIR = {str(tmp_path)!r}\n"
        f"FIXTURES = {str(FIXTURES)!r}\n" + textwrap.dedent(code)
    )
    tests = str(Path(__file__).parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [tests, env.get("PYTHONPATH")] if p)
    run = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr
    return json.loads((tmp_path / "out.json").read_text())


# --- in this process: names and the f32 default ------------------------------


def test_bad_precision_names_are_precision_errors(s0_fused_path):
    w = np.ones((4, 4, 1, 1), np.float32)
    message = r'precision: expected None, "f32" or "bf16", got "fp16"'
    with pytest.raises(repconv.PrecisionError, match=message) as e:
        repconv.Conv2d(w, precision="fp16")
    assert isinstance(e.value, ValueError)
    with pytest.raises(repconv.PrecisionError, match=r'got "BF16"'):
        repconv.Conv2d(w).with_precision("BF16")
    with pytest.raises(repconv.PrecisionError, match=r'got ""'):
        repconv.MobileOne.load(s0_fused_path, precision="")
    net = repconv.MobileOne.load(s0_fused_path)
    with pytest.raises(repconv.PrecisionError, match=r'got "half"'):
        net.with_precision("half")
    with pytest.raises(repconv.PrecisionError, match=r'got "f16"'):
        repconv.MobileOne.from_state_dict(read_safetensors(s0_fused_path), precision="f16")
    with pytest.raises(TypeError):
        repconv.Conv2d(w, precision=16)


def test_f32_is_the_default_and_none_means_it(s0_train_path, s0_io):
    rng = np.random.default_rng(11)
    w = rng.uniform(-1, 1, (8, 6, 1, 1)).astype(np.float32)
    x = rng.uniform(-1, 1, (1, 6, 5, 7)).astype(np.float32)
    base = repconv.Conv2d(w)
    assert base.precision == "f32" and "precision='f32'" in repr(base)
    for conv in (repconv.Conv2d(w, precision="f32"), repconv.Conv2d(w, precision=None),
                 base.with_precision(None), base.with_precision("f32")):
        assert conv.precision == "f32" and conv.kernel_name == base.kernel_name
        assert np.array_equal(bits(conv(x)), bits(base(x)))
    net = repconv.MobileOne.load(s0_train_path, precision="f32")
    assert net.precision == "f32" and net.reparameterize().precision == "f32"
    assert "precision='f32'" in repr(net)
    assert np.array_equal(bits(net(s0_io["input"])),
                          bits(repconv.MobileOne.load(s0_train_path)(s0_io["input"])))


# --- child processes ---------------------------------------------------------


def test_bf16_is_a_precision_error_without_the_hardware(tmp_path):
    """Without REPCONV_BF16: on a CPU without AVX512_BF16, every way of
    asking for bf16 raises PrecisionError (a ValueError) naming the way out;
    on one with it, every way runs the hardware kernel."""
    got = child(
        """
        results = {}
        def attempt(name, make):
            try:
                obj = make()
            except Exception as e:
                results[name] = dict(error=type(e).__name__, message=str(e),
                                     value_error=isinstance(e, ValueError),
                                     repconv_error=isinstance(e, repconv.Error))
            else:
                results[name] = dict(precision=obj.precision,
                                     kernel=getattr(obj, "kernel_name", None))
        w = np.ones((8, 8, 1, 1), np.float32)
        path = FIXTURES + "/s0.fused.safetensors"
        attempt("conv", lambda: repconv.Conv2d(w, precision="bf16"))
        attempt("conv.with_precision", lambda: repconv.Conv2d(w).with_precision("bf16"))
        attempt("load", lambda: repconv.MobileOne.load(path, precision="bf16"))
        attempt("with_precision", lambda: repconv.MobileOne.load(path).with_precision("bf16"))
        json.dump(results, open(OUT, "w"))
        """,
        None,
        tmp_path,
    )
    assert len(got) == 4
    for name, r in got.items():
        if native_bf16():
            assert r["precision"] == "bf16", (name, r)
            if r["kernel"] is not None:
                assert r["kernel"] == "conv1x1_bf16_8x48__avx512bf16", (name, r)
        else:
            assert r.get("error") == "PrecisionError", (name, r)
            assert r["value_error"] and r["repconv_error"], (name, r)
            # No AVX512_BF16 (the way out named), or REPCONV_ISA chose
            # other kernels than avx512.
            assert ("REPCONV_BF16=emulated" in r["message"]
                    or "bf16 needs the avx512 kernels" in r["message"]), (name, r)


def test_bf16_conv2d_matches_the_reference_on_rounded_operands(tmp_path):
    """A 1x1 convolution in bf16 (tile borders: 19 rows, 9x13 pixels, an
    odd reduction) is the float64 reference on bf16-rounded weights and
    inputs, to f32-summation accuracy, and differs from the unrounded one; a
    depthwise 3x3 convolution asked for bf16 stays on its f32 kernel, bit for
    bit (only the 1x1 and dense 3x3 layers have bf16 kernels)."""
    got = child(
        """
        rng = np.random.default_rng(21)
        x = rng.uniform(-1, 1, (2, 37, 9, 13)).astype(np.float32)
        w = rng.uniform(-0.5, 0.5, (19, 37, 1, 1)).astype(np.float32)
        b = rng.uniform(-0.5, 0.5, 19).astype(np.float32)
        conv = repconv.Conv2d(w, b, activation="relu", precision="bf16")
        again = repconv.Conv2d(w, b, activation="relu").with_precision("bf16")
        y = conv(x)
        conv.threads = 2
        y2 = conv(x)
        w3 = rng.uniform(-0.5, 0.5, (37, 1, 3, 3)).astype(np.float32)
        b3 = rng.uniform(-0.5, 0.5, 37).astype(np.float32)
        c3 = repconv.Conv2d(w3, b3, padding=1, groups=37, precision="bf16")
        f3 = repconv.Conv2d(w3, b3, padding=1, groups=37)
        np.savez(OUT_DIR + "/conv.npz", x=x, w=w, b=b, y=y, y2=y2, again=again(x),
                 f32=repconv.Conv2d(w, b, activation="relu")(x), y3=c3(x), f3=f3(x))
        json.dump(dict(kernel=conv.kernel_name, precision=conv.precision, again=again.kernel_name,
                       k3=c3.kernel_name, f3=f3.kernel_name, p3=c3.precision,
                       repr=repr(conv)), open(OUT, "w"))
        """,
        "emulated",
        tmp_path,
    )
    a = np.load(tmp_path / "conv.npz")
    assert got["kernel"] == got["again"] == f"conv1x1_bf16_8x48__{bf16_impl()}"
    assert got["precision"] == "bf16" and "precision='bf16'" in got["repr"]
    want, mag = conv_ref(round_bf16(a["x"]), round_bf16(a["w"]), a["b"], (1, 1), (0, 0), (1, 1),
                         1, True)
    assert np.all(np.abs(a["y"] - want) <= 1e-5 * mag + 1e-6)
    assert np.array_equal(bits(a["y"]), bits(a["y2"])) and np.array_equal(bits(a["y"]),
                                                                          bits(a["again"]))
    unrounded, _ = conv_ref(a["x"], a["w"], a["b"], (1, 1), (0, 0), (1, 1), 1, True)
    assert np.abs(a["y"] - unrounded).max() > 1e-3 * np.abs(unrounded).max()
    assert np.abs(a["f32"] - unrounded).max() <= 1e-5 * np.abs(unrounded).max()
    # Depthwise 3x3: no bf16 kernel, so the f32 one.
    assert got["k3"] == got["f3"] and "bf16" not in got["k3"] and got["p3"] == "bf16"
    assert np.array_equal(bits(a["y3"]), bits(a["f3"]))


def test_bf16_network_logits_agree_with_f32(tmp_path, s0_io):
    """The S0 fixtures in bf16 (load, from_state_dict, with_precision, both
    forms, reparameterize carrying it): the same logits by every route and
    thread count, within BF16_REL_TOL of the f32 logits and of PyTorch's,
    the same top classes, but not the f32 logits."""
    got = child(
        """
        from conftest import read_safetensors
        x = read_safetensors(FIXTURES + "/s0.io.safetensors")["input"]
        train_path = FIXTURES + "/s0.train.safetensors"
        train = repconv.MobileOne.load(train_path, precision="bf16")
        fused = train.reparameterize()
        out = dict(
            multi=train(x),
            fused=fused(x),
            f32_multi=repconv.MobileOne.load(train_path)(x),
            f32_fused=repconv.MobileOne.load(train_path).reparameterize()(x),
            via_with=repconv.MobileOne.load(train_path).with_precision("bf16").reparameterize()(x),
            via_dict=repconv.MobileOne.from_state_dict(
                read_safetensors(train_path), precision="bf16").reparameterize()(x),
            back_to_f32=fused.with_precision("f32")(x),
        )
        fused.threads = 1
        out["t1"] = fused(x)
        fused.threads = 2
        out["t2"] = fused(x)
        np.savez(OUT_DIR + "/net.npz", **out)
        json.dump(dict(train=train.precision, fused=fused.precision, form=fused.form,
                       back=fused.with_precision(None).precision, repr=repr(fused)),
                  open(OUT, "w"))
        """,
        "emulated",
        tmp_path,
    )
    assert (got["train"], got["fused"], got["form"], got["back"]) == ("bf16", "bf16", "fused",
                                                                      "f32")
    assert "precision='bf16'" in got["repr"]
    a = np.load(tmp_path / "net.npz")
    for key in ("via_with", "via_dict", "t1", "t2"):
        assert np.array_equal(bits(a[key]), bits(a["fused"])), key
    assert np.array_equal(bits(a["back_to_f32"]), bits(a["f32_fused"]))
    for form in ("fused", "multi"):
        got_bf16 = a[form].astype(np.float64)
        assert got_bf16.shape == (2, 10) and np.all(np.isfinite(got_bf16))
        for what, want in [("f32", a[f"f32_{form}"]), ("PyTorch", s0_io[f"output_{form}"])]:
            want = want.astype(np.float64)
            diff = np.abs(got_bf16 - want).max()
            rel = diff / np.abs(want).max()
            print(f"{form} bf16 vs {what}: max |diff| {diff:.3e}, relative {rel:.3e}")
            assert 0 < rel <= BF16_REL_TOL, (form, what, rel)
            assert np.array_equal(got_bf16.argmax(1), want.argmax(1)), (form, what)

