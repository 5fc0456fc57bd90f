#!/usr/bin/env python3
"""Reference quantisation maps for 8-bit state (`q8`, `uq8`): bitsandbytes'
`create_dynamic_map(signed, max_exponent_bits=7, total_bits=8)`, re-implemented in pure
Python with every float32 operation emulated (round each result to float32), as torch computes
it: `torch.linspace(0.1, 1, F)` by its scalar formula (`start + step*j` for j < F//2, else
`end - step*(F-1-j)`, `step = (end - start) / (F - 1)`), midpoints `(a + b) / 2.0`, and
`float32(10**(i-6)) * mean`.

bitsandbytes itself (and torch) did not install on the machine this was written on, so this is
the paper's/bitsandbytes' formula, not the package's output. The Rust table
(`optim_runtime::lowp::q8`) is an independent implementation checked bit for bit against the
file this writes:

    python3 tests/refgen/q8_maps.py > tests/fixtures/q8_maps.txt

Output: two lines, `signed` then `unsigned`, each the name followed by the 256 entries
(ascending) as float32 bit patterns in hex.
"""
import struct


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def linspace(start, end, steps):
    start, end = f32(start), f32(end)
    step = f32(f32(end - start) / f32(steps - 1))
    half = steps // 2
    out = []
    for j in range(steps):
        if j < half:
            out.append(f32(start + f32(step * j)))
        else:
            out.append(f32(end - f32(step * (steps - j - 1))))
    return out


def dynamic_map(signed, max_exponent_bits=7, total_bits=8):
    data = []
    non_sign_bits = total_bits - 1
    for i in range(max_exponent_bits):
        if signed:
            fraction_items = 2 ** (i + non_sign_bits - max_exponent_bits) + 1
        else:
            fraction_items = 2 ** (i + non_sign_bits - max_exponent_bits + 1) + 1
        b = linspace(0.1, 1.0, fraction_items)
        means = [f32(f32(b[j] + b[j + 1]) / 2.0) for j in range(len(b) - 1)]
        scale = f32(10.0 ** (-(max_exponent_bits - 1) + i))
        data += [f32(scale * m) for m in means]
        if signed:
            data += [-f32(scale * m) for m in means]
    data.append(0.0)
    data.append(1.0)
    assert len(data) == 2**total_bits
    return sorted(data)


def bits(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


for name, signed in (("signed", True), ("unsigned", False)):
    print(name, " ".join("%08x" % bits(v) for v in dynamic_map(signed)))
