"""The cost of calling repconv from Python, measured in one process.

For each case the same forward pass runs two ways, in alternating rounds:

* Python: ``obj(x, out=y)`` called ``calls`` times in a Python loop, timed
  with time.perf_counter around the loop;
* Rust: ``obj._time_rust(x, y, calls)``, the same passes looped in Rust with
  the GIL released once (the Rust API's ``forward_into`` on the same object,
  workspace and threads), timed with std::time::Instant inside.

Reported per call: the median over rounds of each, their ratio, the median
of the per-round ratios (each Python round next to its Rust round), and the
difference (the binding's fixed cost per call: argument checks, the numpy
borrow, releasing and taking back the GIL). Cases:

* MobileOne-S0 (the committed fixture's weights, fused), batch 1, 224x224,
  on the default threads (the global pool) and on one thread;
* a 1x1 convolution of 16 channels on a 4x4 plane (bias + ReLU, serial,
  about 8 KFLOP), where the fixed cost is most of the time.

    python python/bench/overhead.py [--rounds 30] [--json]

The machine these numbers come from may be shared and noisy: medians over
alternating rounds, and the spread (min..max of the rounds) is printed.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import repconv

ROOT = Path(__file__).resolve().parents[2]


def measure(obj, x, y, calls, rounds):
    """Per-call seconds of the Python and Rust paths, one list each."""
    py_times, rust_times = [], []
    for _ in range(3):  # warm-up: workspaces, pools, caches
        obj(x, out=y)
        obj._time_rust(x, y, calls)
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(calls):
            obj(x, out=y)
        py_times.append((time.perf_counter() - t) / calls)
        rust_times.append(obj._time_rust(x, y, calls) / calls)
    return py_times, rust_times


def report(name, py_times, rust_times, unit, scale):
    p, r = statistics.median(py_times), statistics.median(rust_times)
    # Each Python round ran right before its Rust round: the median of the
    # per-round ratios is less exposed to the machine's drift.
    paired = statistics.median(a / b for a, b in zip(py_times, rust_times))
    row = {
        "case": name,
        "python_median_s": p,
        "rust_median_s": r,
        "ratio": p / r,
        "paired_ratio": paired,
        "overhead_per_call_s": p - r,
        "python_min_max_s": [min(py_times), max(py_times)],
        "rust_min_max_s": [min(rust_times), max(rust_times)],
    }
    print(
        f"{name:<34} python {p * scale:9.3f} {unit}  rust {r * scale:9.3f} {unit}  "
        f"ratio {p / r:6.4f} (paired {paired:6.4f})  overhead {(p - r) * 1e9:7.0f} ns/call  "
        f"(rounds: python {min(py_times) * scale:.3f}..{max(py_times) * scale:.3f}, "
        f"rust {min(rust_times) * scale:.3f}..{max(rust_times) * scale:.3f} {unit})"
    )
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--json", action="store_true", help="also print the rows as JSON")
    args = ap.parse_args()

    print(f"repconv {repconv.__version__}, ISA {repconv.isa_default()}, Python {sys.version.split()[0]}")
    rows = []
    rng = np.random.default_rng(0)

    fused = repconv.MobileOne.load(ROOT / "tests" / "fixtures" / "s0.fused.safetensors")
    x = rng.uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32)
    y = np.empty((1, fused.num_classes), np.float32)
    for threads in (0, 1):
        fused.threads = threads
        name = f"S0 fused b1 224, {fused.num_threads} thread(s)"
        rows.append(report(name, *measure(fused, x, y, 5, args.rounds), "ms", 1e3))

    w = rng.uniform(-0.1, 0.1, (16, 16, 1, 1)).astype(np.float32)
    conv = repconv.Conv2d(w, rng.uniform(-0.1, 0.1, 16).astype(np.float32), activation="relu")
    x = rng.uniform(-1, 1, (1, 16, 4, 4)).astype(np.float32)
    y = np.empty((1, 16, 4, 4), np.float32)
    rows.append(
        report(f"1x1 16ch 4x4 ({conv.kernel_name})", *measure(conv, x, y, 2000, args.rounds),
               "us", 1e6)
    )
    if args.json:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
