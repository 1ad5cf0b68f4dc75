"""repconv.MobileOne on the committed S0 fixtures: the Rust API's logits bit
for bit, PyTorch's within the golden test's tolerance, both forms,
reparameterize, save and reload, state dicts, the benchmark helper."""

import numpy as np
import pytest

import repconv
from conftest import FIXTURES, bits, expected_dir, read_safetensors

# tests/golden.rs: the whole S0's logits against PyTorch's (the multi-branch
# form at 2e-4: see S0_ABS_TOL there), and relative to the largest logit.
ABS_TOL = 1e-4
S0_MULTI_ABS_TOL = 2e-4
REL_TOL = 1e-5


def rust_case(name):
    """The input and logits make_expected (Rust API) wrote for one case."""
    d = expected_dir() / name
    x = np.fromfile(d / "input.f32", dtype=np.float32).reshape(2, 3, 64, 64)
    return x, np.fromfile(d / "expected.f32", dtype=np.float32).reshape(2, 10)


def test_fused_bit_equal_to_rust_api(s0_fused_path, s0_io):
    x, want = rust_case("fused-global")
    assert np.array_equal(x, s0_io["input"])
    model = repconv.MobileOne.load(s0_fused_path)  # global pool, as make_expected
    assert np.array_equal(bits(model(x)), bits(want))


def test_multi_branch_bit_equal_to_rust_api(s0_train_path):
    x, want = rust_case("train-t2")
    model = repconv.MobileOne.load(s0_train_path, threads=2)
    assert model.form == "multi-branch"
    assert np.array_equal(bits(model(x)), bits(want))


def test_reparameterized_in_python_bit_equal_to_rust_api(s0_train_path):
    x, want = rust_case("train-reparameterized-t2")
    model = repconv.MobileOne.load(s0_train_path)
    model.threads = 2
    fused = model.reparameterize()
    assert fused.threads == 2 and fused.form == "fused"
    assert np.array_equal(bits(fused(x)), bits(want))


def test_both_forms_match_pytorch(s0_train_path, s0_fused_path, s0_io):
    x = s0_io["input"]
    train = repconv.MobileOne.load(s0_train_path)
    for model, key, tol in [
        (train, "output_multi", S0_MULTI_ABS_TOL),
        (train.reparameterize(), "output_fused", ABS_TOL),
        (repconv.MobileOne.load(s0_fused_path), "output_fused_f16", ABS_TOL),
    ]:
        got, want = model(x), s0_io[key]
        assert got.shape == want.shape == (2, 10)
        diff = np.abs(got.astype(np.float64) - want).max()
        assert diff <= tol and diff <= REL_TOL * np.abs(want).max(), (key, diff)


def test_properties(s0_train_path, s0_fused_path):
    train = repconv.MobileOne.load(s0_train_path)
    fused = repconv.MobileOne.load(s0_fused_path, isa="portable", threads=1)
    assert (train.variant, train.form, train.num_classes, train.in_channels) == (
        "s0", "multi-branch", 10, 3)
    assert (fused.variant, fused.form, fused.num_classes) == ("s0", "fused", 10)
    assert train.isa == repconv.isa_default() and fused.isa == "portable"
    assert train.threads == 0 and train.num_threads >= 1
    assert fused.threads == 1 and fused.num_threads == 1
    assert train.output_shape((5, 3, 32, 32)) == (5, 10)
    assert "variant='s0'" in repr(train) and "form='fused'" in repr(fused)


def test_threads_and_isas_agree(s0_train_path, s0_io):
    """Thread counts give the same bits; every ISA agrees to rounding."""
    x = s0_io["input"]
    model = repconv.MobileOne.load(s0_train_path).reparameterize()
    base = model(x)
    for n in (1, 2, 3, 0):
        model.threads = n
        assert np.array_equal(bits(model(x)), bits(base)), n
    for isa in repconv.isa_available():
        other = repconv.MobileOne.load(s0_train_path, isa=isa).reparameterize()
        assert other.isa == isa
        assert np.abs(other(x) - base).max() <= S0_MULTI_ABS_TOL


def test_reparameterize_agrees_and_keeps_the_original(s0_train_path, s0_io):
    x = s0_io["input"]
    train = repconv.MobileOne.load(s0_train_path)
    before = train(x)
    fused = train.reparameterize()
    assert train.form == "multi-branch"
    assert np.array_equal(bits(train(x)), bits(before))
    assert np.abs(fused(x) - before).max() <= S0_MULTI_ABS_TOL
    assert np.array_equal(np.argmax(fused(x), 1), np.argmax(before, 1))
    # Reparameterizing a fused network copies it.
    again = fused.reparameterize()
    assert np.array_equal(bits(again(x)), bits(fused(x)))


def test_save_and_reload(tmp_path, s0_train_path, s0_io):
    x = s0_io["input"]
    train = repconv.MobileOne.load(s0_train_path)
    fused = train.reparameterize()
    for model, name in [(train, "train.safetensors"), (fused, "fused.safetensors")]:
        path = tmp_path / name
        model.save(path)
        back = repconv.MobileOne.load(str(path))
        assert back.form == model.form
        assert np.array_equal(bits(back(x)), bits(model(x)))
    # The saved fused file holds timm's reparam_conv names, float32.
    tensors = read_safetensors(tmp_path / "fused.safetensors")
    assert "stem.reparam_conv.weight" in tensors and "head.fc.weight" in tensors
    assert all(t.dtype == np.float32 for t in tensors.values())
    # Overwrite (the default) replaces the file.
    train.save(tmp_path / "fused.safetensors")
    assert repconv.MobileOne.load(tmp_path / "fused.safetensors").form == "multi-branch"


def test_from_state_dict_equals_load(s0_train_path, s0_fused_path, s0_io):
    x = s0_io["input"]
    for path in (s0_train_path, s0_fused_path):
        # The fixtures' float16 tensors and int64 num_batches_tracked, as a
        # torch state_dict turned into numpy arrays would hold them.
        state = read_safetensors(path)
        assert any(k.endswith("num_batches_tracked") for k in state) == (path == s0_train_path)
        got = repconv.MobileOne.from_state_dict(state)
        want = repconv.MobileOne.load(path)
        assert got.form == want.form
        assert np.array_equal(bits(got(x)), bits(want(x)))


def test_from_state_dict_takes_array_likes(s0_fused_path, s0_io):
    """Anything with __array__ (a torch tensor's stand-in) works, as does
    float64."""

    class Tensorish:
        def __init__(self, a):
            self.a = a

        def __array__(self, dtype=None, copy=None):
            return self.a if dtype is None else self.a.astype(dtype)

    state = read_safetensors(s0_fused_path)
    x = s0_io["input"]
    want = repconv.MobileOne.from_state_dict(state)(x)
    wrapped = {k: Tensorish(v) for k, v in state.items()}
    assert np.array_equal(bits(repconv.MobileOne.from_state_dict(wrapped)(x)), bits(want))
    as64 = {k: v.astype(np.float64) for k, v in state.items()}
    assert np.array_equal(bits(repconv.MobileOne.from_state_dict(as64)(x)), bits(want))


def test_benchmark_reports_the_main_jobs_table(s0_train_path):
    model = repconv.MobileOne.load(s0_train_path)
    r = model.benchmark(size=64, batch=2, runs=3, threads=1, peak=False)
    assert r["variant"] == "s0" and r["form"] == "multi-branch"
    assert r["isa"] == model.isa and r["threads"] == 1 and r["runs"] == 3
    assert r["precision"] == model.precision == "f32"
    assert r["shape"] == (2, 3, 64, 64) and r["batch"] == 2 and r["size"] == 64
    assert r["multi_ms"] > 0 and r["fused_ms"] > 0
    assert r["speedup"] == pytest.approx(r["multi_ms"] / r["fused_ms"])
    assert 0 <= r["max_abs_diff"] <= S0_MULTI_ABS_TOL and r["argmax_equal"] is True
    assert r["max_rel_diff"] == pytest.approx(r["max_abs_diff"] / r["max_abs_logit"])
    assert r["multi_mflop"] > r["fused_mflop"] > 0
    assert r["fused_gflops"] == pytest.approx(r["fused_mflop"] / r["fused_ms"])
    assert r["peak_gflops"] is None
    assert isinstance(r["cpu"], str) and r["cpu"]


def test_benchmark_on_a_given_batch_matches_a_direct_comparison(s0_train_path, s0_io):
    x = s0_io["input"]
    model = repconv.MobileOne.load(s0_train_path)
    r = model.benchmark(x, runs=1, threads=1, peak=True)
    a, b = model(x), model.reparameterize()(x)
    assert r["max_abs_diff"] == pytest.approx(float(np.abs(a.astype(np.float64) - b).max()))
    assert r["argmax_equal"] == bool(np.array_equal(a.argmax(1), b.argmax(1)))
    assert r["shape"] == x.shape and r["size"] == 64
    assert r["peak_gflops"] > 0


def test_other_fixtures_are_blocks_not_networks():
    """A block fixture is not a network: a clear error naming a tensor."""
    with pytest.raises(repconv.FormatError, match="tensor"):
        repconv.MobileOne.load(FIXTURES / "stem.train.safetensors")
