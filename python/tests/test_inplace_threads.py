"""out= writes the caller's memory in place (identity and pointers, not
timing); inputs are read where they lie; forward passes release the GIL and
give the same bits from many Python threads at once; the README's example
runs."""

import os
import re
import subprocess
import sys
import threading
import time
import tracemalloc

import numpy as np
import pytest

import repconv
from conftest import ROOT, bits


def data_pointer(a):
    return a.__array_interface__["data"][0]


def test_conv_out_is_written_in_place():
    rng = np.random.default_rng(1)
    conv = repconv.Conv2d(rng.uniform(-1, 1, (16, 16, 1, 1)).astype(np.float32), activation="relu")
    x = rng.uniform(-1, 1, (1, 16, 4, 4)).astype(np.float32)
    want = conv(x)
    # The output lands inside a NaN-filled buffer, between two canary images.
    buf = np.full((3, 16, 4, 4), np.nan, np.float32)
    out = buf[1:2]
    before = data_pointer(out)
    got = conv(x, out=out)
    assert got is out
    assert data_pointer(got) == before == data_pointer(buf) + buf[0].nbytes
    assert np.array_equal(bits(buf[1:2]), bits(want))
    assert np.all(np.isnan(buf[0])) and np.all(np.isnan(buf[2]))


def test_network_out_is_written_in_place(s0_fused_path, s0_io):
    model = repconv.MobileOne.load(s0_fused_path)
    x = s0_io["input"]
    want = model(x)
    buf = np.full((4, 10), np.nan, np.float32)
    out = buf[1:3]
    got = model(x, out=out)
    assert got is out and data_pointer(got) == data_pointer(buf) + 40
    assert np.array_equal(bits(buf[1:3]), bits(want))
    assert np.all(np.isnan(buf[0])) and np.all(np.isnan(buf[3]))


def test_input_is_read_where_it_lies(s0_fused_path, s0_io):
    """A C-contiguous view at an offset inside a larger buffer is read in
    place (its neighbours are NaN, so reading outside it would show), and
    the out= path allocates no numpy memory at all (a copy of the input or
    a fresh output would)."""
    model = repconv.MobileOne.load(s0_fused_path)
    x = s0_io["input"]
    want = model(x)
    buf = np.full((4, 3, 64, 64), np.nan, np.float32)
    buf[1:3] = x
    view = buf[1:3]
    assert view.base is buf
    out = np.empty((2, 10), np.float32)
    model(view, out=out)  # warm: workspaces sized
    tracemalloc.start()
    try:
        start = tracemalloc.take_snapshot()
        got = model(view, out=out)
        end = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    numpy_domain = tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)
    grown = [
        s for s in end.filter_traces([numpy_domain]).compare_to(
            start.filter_traces([numpy_domain]), "lineno")
        if s.size_diff > 0
    ]
    assert got is out
    assert grown == [], grown
    assert np.array_equal(bits(out), bits(want))
    # The check can fail: a call without out= allocates its result there.
    tracemalloc.start()
    try:
        start = tracemalloc.take_snapshot()
        fresh = model(view)
        end = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = [
        s for s in end.filter_traces([numpy_domain]).compare_to(
            start.filter_traces([numpy_domain]), "lineno")
        if s.size_diff >= fresh.nbytes
    ]
    assert grown


def test_forward_releases_the_gil():
    """While one thread is inside a long forward pass, another thread keeps
    running Python. Holding the GIL would stall it for the whole call; the
    test asserts its longest stall is well under half the call (the call
    takes ~0.2-1 s; a released GIL leaves stalls of scheduler time slices)."""
    rng = np.random.default_rng(2)
    conv = repconv.Conv2d(rng.uniform(-0.1, 0.1, (256, 256, 3, 3)).astype(np.float32),
                          padding=1, threads=1)
    x = rng.uniform(-1, 1, (1, 256, 64, 64)).astype(np.float32)
    conv(x)  # warm
    span = {}

    def worker():
        span["start"] = time.perf_counter()
        for _ in range(3):
            conv(x)
        span["end"] = time.perf_counter()

    t = threading.Thread(target=worker)
    stamps = []
    t.start()
    while t.is_alive():
        stamps.append(time.perf_counter())
    t.join()
    duration = span["end"] - span["start"]
    inside = [s for s in stamps if span["start"] <= s <= span["end"]]
    edges = [span["start"], *inside, span["end"]]
    longest = max(b - a for a, b in zip(edges, edges[1:]))
    assert duration > 0.05, duration
    assert longest < 0.5 * duration, (longest, duration, len(inside))


@pytest.mark.parametrize("threads", [0, 1, 2])
def test_concurrent_calls_give_the_same_bits(threads, s0_train_path, s0_io):
    """Several Python threads run one network (and one conv) at once, each
    with its own or a shared input; every result equals the serial one."""
    x = s0_io["input"]
    model = repconv.MobileOne.load(s0_train_path, threads=threads).reparameterize()
    want = model(x)
    rng = np.random.default_rng(3)
    conv = repconv.Conv2d(rng.uniform(-1, 1, (32, 16, 3, 3)).astype(np.float32), padding=1,
                          threads=threads)
    cx = rng.uniform(-1, 1, (2, 16, 20, 20)).astype(np.float32)
    cwant = conv(cx)
    errors = []

    def worker(i):
        try:
            for _ in range(4):
                out = np.empty((2, 10), np.float32)
                got = model(x if i % 2 else x.copy(), out=out)
                assert got is out and np.array_equal(bits(got), bits(want))
                assert np.array_equal(bits(conv(cx)), bits(cwant))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert errors == []


def test_readme_python_example_runs(monkeypatch, capsys):
    """The ```python block of the README's "Use it from Python" section, as
    printed there, run from the repository root."""
    text = (ROOT / "README.md").read_text()
    section = re.search(r"^## Use it from Python\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    assert section, "README.md has no '## Use it from Python' section"
    blocks = re.findall(r"^```python\n(.*?)^```$", section.group(1), flags=re.S | re.M)
    assert len(blocks) == 1, "the section should hold one ```python example"
    monkeypatch.chdir(ROOT)
    exec(compile(blocks[0], "README.md", "exec"), {"__name__": "__readme__"})
    assert capsys.readouterr().out.strip()


def test_global_pool_is_bounded_like_the_c_api():
    """A handle left at 0 threads runs on rayon's global pool; the package
    builds it at import with at most 1024 workers, so RAYON_NUM_THREADS=100000
    no longer starts 100000 threads on the first pass (a small one is taken
    as given)."""
    def pool_size(value):
        env = dict(os.environ)
        env["RAYON_NUM_THREADS"] = value
        code = (
            "import numpy as np, repconv\n"
            "w = np.ones((4, 4, 1, 1), np.float32)\n"
            "c = repconv.Conv2d(w)\n"
            "c(np.ones((1, 4, 2, 2), np.float32))\n"
            "print(c.num_threads)\n"
        )
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        return int(run.stdout.strip())

    assert pool_size("3") == 3
    assert pool_size("100000") == 1024
