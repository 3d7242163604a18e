#!/usr/bin/env python3
"""Oracle for lathe's core/quant: runs gguf-py's reference (de)quantizers on generated data.

  quant_oracle.py quantize   TYPE SEED NBLOCKS OUTDIR   float32 inputs -> gguf.quants.quantize bytes
  quant_oracle.py dequantize TYPE SEED NBLOCKS OUTDIR   raw block bytes -> gguf.quants.dequantize floats
  quant_oracle.py tables                                JSON {name: [ggml id, block size, type size]}

quantize/dequantize write OUTDIR/input.bin and OUTDIR/expected.bin (raw little-endian) and print
one JSON line {"elements": n, "input_bytes": ..., "expected_bytes": ...}. NBLOCKS random blocks
are generated; F16/BF16 also get a systematic sweep over exponents and rounding boundaries.
"""
import json
import sys
import warnings
from pathlib import Path

import numpy as np

import gguf
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

warnings.simplefilter("ignore")  # numpy warns on overflow and invalid casts; both are intended here


# ---------------------------------------------------------------- quantize inputs (float32)

def f16_tie_scale(rng, exponent):
    """A float32 that lies exactly halfway between two float16 values (11 significant bits + 1)."""
    odd = int(rng.integers(0, 1024)) * 2 + 1
    return np.float32((1.0 + odd * 2.0**-11) * 2.0**exponent)


def tie_block(rng, qtype, bs):
    """Values whose scaled quants land exactly on rounding boundaries (and scales on f16 ties)."""
    k = int(rng.integers(-20, 20))
    d = np.float32(2.0**k) if rng.random() < 0.5 else f16_tie_scale(rng, k)
    x = np.empty(bs, dtype=np.float32)
    if qtype == GGMLQuantizationType.Q8_0:
        m = rng.integers(-127, 127, size=bs)
        half = rng.random(bs) < 0.7
        x[:] = (m + np.where(half, 0.5, 0.0)) * d
        pos = rng.integers(0, bs)
        x[pos] = np.float32(127.0) * d * (1 if rng.random() < 0.5 else -1)
    elif qtype == GGMLQuantizationType.Q4_0:
        sign = 1 if rng.random() < 0.5 else -1
        m = rng.integers(-8, 8, size=bs)
        half = rng.random(bs) < 0.7
        x[:] = (m + np.where(half, 0.5, 0.0)) * d
        pos = rng.integers(0, bs)
        x[pos] = np.float32(-8.0) * d * sign  # the largest magnitude, so d_block = +-d
        if rng.random() < 0.5:  # an equal magnitude of the other sign: np.argmax takes the first
            other = (pos + 1 + rng.integers(0, bs - 1)) % bs
            x[other] = -x[pos]
    else:  # Q4_1
        base = np.float32(int(rng.integers(-50, 50))) * d
        m = rng.integers(0, 15, size=bs)
        half = rng.random(bs) < 0.7
        x[:] = base + (m + np.where(half, 0.5, 0.0)) * d
        lo, hi = rng.choice(bs, size=2, replace=False)
        x[lo] = base
        x[hi] = base + np.float32(15.0) * d
    return x


def quant_block(rng, qtype, bs):
    kind = int(rng.integers(0, 10))
    allow_mixed_zeros = qtype != GGMLQuantizationType.Q4_1  # see quant.cpp: +0/-0 min order
    if kind == 0:  # normal, scale anywhere from 1e-4 to 1e4
        return rng.normal(0, 10.0 ** rng.uniform(-4, 4), size=bs)
    if kind == 1:  # uniform, large magnitudes (finite, and finite after scaling)
        return rng.uniform(-1, 1, size=bs) * 10.0 ** rng.uniform(20, 30)
    if kind == 2:  # all zero
        if allow_mixed_zeros:
            return np.where(rng.random(bs) < 0.5, 0.0, -0.0)
        return np.full(bs, -0.0 if rng.random() < 0.5 else 0.0)
    if kind == 3:  # one huge outlier
        x = rng.normal(0, 1, size=bs)
        x[rng.integers(0, bs)] = (1 if rng.random() < 0.5 else -1) * 10.0 ** rng.uniform(3, 30)
        return x
    if kind == 4:  # tiny, float32 subnormal scale (scales underflow, reciprocals overflow)
        return rng.uniform(-1, 1, size=bs) * 10.0 ** rng.uniform(-45, -37)
    if kind == 5:  # tiny values around one normal one
        x = rng.uniform(-1, 1, size=bs) * 1e-40
        x[rng.integers(0, bs)] = rng.normal(0, 1)
        return x
    if kind == 6:  # constant block (Q4_1: d == 0)
        return np.full(bs, rng.normal(0, 10.0 ** rng.uniform(-3, 3)))
    if kind == 7:  # uniform in [-1, 1] with a few exact zeros
        x = rng.uniform(-1, 1, size=bs)
        x[rng.random(bs) < 0.1] = 0.0
        return x
    return tie_block(rng, qtype, bs)  # kinds 8, 9


def float_sweep(rng, round_bits):
    """float32 bit patterns covering every sign and exponent, with the bits that rounding drops set
    to 0, 1, just below / at / just above the halfway point, all ones and random."""
    keep_bits = 23 - round_bits
    top = np.unique(np.concatenate([[0, 1, 2, (1 << keep_bits) - 1, (1 << keep_bits) - 2, 1 << (keep_bits - 1)],
                                    rng.integers(0, 1 << keep_bits, size=10)])).astype(np.uint32)
    half = 1 << (round_bits - 1)
    low = np.array([0, 1, half - 1, half, half + 1, (1 << round_bits) - 1, int(rng.integers(0, 1 << round_bits))],
                   dtype=np.uint32)
    sign = np.array([0, 1], dtype=np.uint32).reshape(-1, 1, 1, 1) << np.uint32(31)
    exponent = np.arange(256, dtype=np.uint32).reshape(1, -1, 1, 1) << np.uint32(23)
    mantissa = (top.reshape(1, 1, -1, 1) << np.uint32(round_bits)) | low.reshape(1, 1, 1, -1)
    return (sign | exponent | mantissa).ravel()


def plain_inputs(rng, qtype, count):
    round_bits = 13 if qtype == GGMLQuantizationType.F16 else 16
    random_bits = rng.integers(0, 1 << 32, size=count, dtype=np.uint64).astype(np.uint32)
    values = np.concatenate([rng.normal(0, 1, size=count), rng.normal(0, 1e-5, size=count),
                             rng.normal(0, 6e4, size=count)]).astype(np.float32)
    return np.concatenate([float_sweep(rng, round_bits), random_bits, values.view(np.uint32)]).view(np.float32)


def quantize_case(qtype, seed, nblocks):
    rng = np.random.default_rng(seed)
    bs, _ = GGML_QUANT_SIZES[qtype]
    if bs == 1:
        data = plain_inputs(rng, qtype, nblocks)
        rows = data.reshape(1, -1)
    else:
        blocks = [quant_block(rng, qtype, bs).astype(np.float32) for _ in range(nblocks)]
        if qtype == GGMLQuantizationType.Q4_1:
            # Tiny values can round to zeros of both signs; numpy's SIMD min/max picks between +0 and
            # -0 by lane order, which lathe does not model. Blocks keep zeros of one sign only.
            for x in blocks:
                if np.any((x == 0) & np.signbit(x)) and np.any((x == 0) & ~np.signbit(x)):
                    x[x == 0] = 0.0
        data = np.concatenate(blocks)
        rows = data.reshape(-1, bs * 4) if nblocks % 4 == 0 else data.reshape(-1, bs)
    expected = np.asarray(gguf.quants.quantize(rows, qtype))
    return data, expected.tobytes()


# ---------------------------------------------------------------- dequantize inputs (raw blocks)

# Byte offsets of the float16 scale fields in each block layout (ggml-common.h).
SCALE_OFFSETS = {
    "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
    "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208],
}


def random_f16_scales(rng, count):
    """float16 bit patterns: typical, subnormal, zero, largest finite, inf/NaN, anything."""
    kind = rng.choice(7, size=count, p=[0.3, 0.15, 0.15, 0.1, 0.1, 0.05, 0.15])
    sign = rng.integers(0, 2, size=count).astype(np.uint16) << np.uint16(15)
    normal = (rng.integers(1, 31, size=count) << 10) | rng.integers(0, 1024, size=count)
    typical = np.abs(rng.normal(0, 0.01, size=count)).astype(np.float16).view(np.uint16)
    subnormal = rng.integers(1, 1024, size=count)
    zero = np.zeros(count)
    large = np.where(rng.random(count) < 0.5, 0x7BFF, (rng.integers(29, 31, size=count) << 10) | rng.integers(0, 1024, size=count))
    special = rng.choice([0x7C00, 0x7E00, 0x7C01, 0x7D23], size=count)
    anything = rng.integers(0, 1 << 15, size=count)
    choices = np.stack([normal, typical, subnormal, zero, large, special, anything]).astype(np.uint16)
    return (choices[kind, np.arange(count)] | sign).astype(np.uint16)


def dequantize_case(qtype, seed, nblocks):
    rng = np.random.default_rng(seed)
    name = qtype.name
    if qtype == GGMLQuantizationType.F32:
        raw = rng.integers(0, 1 << 32, size=nblocks * 32, dtype=np.uint64).astype(np.uint32).view(np.uint8)
    elif qtype in (GGMLQuantizationType.F16, GGMLQuantizationType.BF16):
        every = np.arange(1 << 16, dtype=np.uint16)  # all 65536 patterns, then random ones
        raw = np.concatenate([every, rng.integers(0, 1 << 16, size=nblocks, dtype=np.uint16)]).view(np.uint8)
    else:
        _, type_size = GGML_QUANT_SIZES[qtype]
        blocks = rng.integers(0, 256, size=(nblocks, type_size), dtype=np.uint8)
        for offset in SCALE_OFFSETS[name]:
            blocks[:, offset:offset + 2] = random_f16_scales(rng, nblocks).view(np.uint8).reshape(nblocks, 2)
        raw = blocks.ravel()
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    rows = raw.reshape(1, -1) if block_size == 1 else raw.reshape(-1, type_size)
    expected = np.asarray(gguf.quants.dequantize(rows, qtype), dtype=np.float32)
    return raw, expected.tobytes()


# ---------------------------------------------------------------- main

def write_case(outdir, data, expected):
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    data = np.ascontiguousarray(data).tobytes()
    (outdir / "input.bin").write_bytes(data)
    (outdir / "expected.bin").write_bytes(expected)
    print(json.dumps({"input_bytes": len(data), "expected_bytes": len(expected)}))


def main(argv):
    if len(argv) == 2 and argv[1] == "tables":
        print(json.dumps({t.name: [t.value, *GGML_QUANT_SIZES[t]] for t in GGMLQuantizationType if t in GGML_QUANT_SIZES}))
        return 0
    if len(argv) != 6 or argv[1] not in ("quantize", "dequantize"):
        print(__doc__, file=sys.stderr)
        return 2
    mode, type_name, seed, nblocks, outdir = argv[1:]
    qtype = GGMLQuantizationType[type_name]
    case = quantize_case if mode == "quantize" else dequantize_case
    data, expected = case(qtype, int(seed), int(nblocks))
    write_case(outdir, data, expected)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
