#!/usr/bin/env python3
"""Checks a GGUF written by `lathe quantize` against gguf-py (the oracle for src/api/quantize.cpp).

Usage: quantize_check.py ORIGINAL.gguf QUANTIZED.gguf TARGET   (TARGET: F32 F16 BF16 Q8_0 Q4_0 Q4_1)

Expected output, tensor by tensor (read with gguf-py's GGUFReader):
  * 1-D tensors: float32 of gguf.quants.dequantize(original);
  * tensors of 2+ dims: gguf.quants.quantize(dequantize(original), TARGET), or F16 when a row is not
    a whole number of TARGET blocks (llama.cpp's fallback);
  * the same names, shapes and order as the original;
  * every metadata field serialized byte for byte as in the original, except general.file_type
    (llama.cpp's LLAMA_FTYPE for TARGET).
Prints one JSON line: {"checked", "type_counts", "fallbacks", "file_type", "mismatches", "missing",
"extra", "metadata_mismatches"}; every list is empty when the file is right. Exit status 0 unless the
arguments are wrong.
"""
import json
import sys

import numpy as np

import gguf
from gguf import GGUFReader, GGMLQuantizationType
from gguf.constants import GGML_QUANT_SIZES

LLAMA_FTYPE = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "BF16": 32}


def expected_type(tensor, target):
    if len(tensor.shape) < 2:
        return GGMLQuantizationType.F32, False
    block, _ = GGML_QUANT_SIZES[target]
    if int(tensor.shape[0]) % block != 0:
        return GGMLQuantizationType.F16, True
    return target, False


def expected_bytes(tensor, qtype):
    values = np.asarray(gguf.quants.dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
    if qtype == GGMLQuantizationType.F32:
        return values.tobytes()
    return np.asarray(gguf.quants.quantize(values, qtype)).tobytes()


def first_difference(want, have):
    for i, (a, b) in enumerate(zip(want, have)):
        if a != b:
            return i
    return min(len(want), len(have))


def field_bytes(field):
    return [np.asarray(part).tobytes() for part in field.parts]


def check_metadata(original, quantized, target):
    problems = []
    for key, field in original.fields.items():
        if key.startswith("GGUF."):
            continue  # header counts, not metadata
        other = quantized.fields.get(key)
        if other is None:
            problems.append({"key": key, "problem": "missing"})
        elif key == "general.file_type":
            if other.types != [gguf.GGUFValueType.UINT32] or int(other.parts[-1][0]) != LLAMA_FTYPE[target]:
                problems.append({"key": key, "problem": f"expected UINT32 {LLAMA_FTYPE[target]}",
                                 "got": [t.name for t in other.types] + [int(other.parts[-1][0])]})
        elif field.types != other.types or field_bytes(field) != field_bytes(other):
            problems.append({"key": key, "problem": "value or type differs"})
    if "general.file_type" not in quantized.fields:
        problems.append({"key": "general.file_type", "problem": "missing"})
    return problems


def main(argv):
    if len(argv) != 4 or argv[3] not in LLAMA_FTYPE:
        print(__doc__, file=sys.stderr)
        return 2
    original, quantized = GGUFReader(argv[1]), GGUFReader(argv[2])
    target = GGMLQuantizationType[argv[3]]
    got = {t.name: t for t in quantized.tensors}
    report = {"checked": 0, "type_counts": {}, "fallbacks": [], "mismatches": [], "missing": [],
              "extra": sorted(set(got) - {t.name for t in original.tensors}),
              "order_matches": [t.name for t in original.tensors] == [t.name for t in quantized.tensors]}
    ftype = quantized.fields.get("general.file_type")
    report["file_type"] = int(ftype.parts[-1][0]) if ftype is not None else None
    for tensor in original.tensors:
        have = got.get(tensor.name)
        if have is None:
            report["missing"].append(tensor.name)
            continue
        qtype, fallback = expected_type(tensor, target)
        if fallback:
            report["fallbacks"].append(tensor.name)
        report["checked"] += 1
        report["type_counts"][have.tensor_type.name] = report["type_counts"].get(have.tensor_type.name, 0) + 1
        problem = None
        if have.tensor_type != qtype:
            problem = f"type {have.tensor_type.name}, expected {qtype.name}"
        elif list(map(int, have.shape)) != list(map(int, tensor.shape)):
            problem = f"shape {list(map(int, have.shape))}, expected {list(map(int, tensor.shape))}"
        else:
            want, data = expected_bytes(tensor, qtype), np.asarray(have.data).tobytes()
            if want != data:
                problem = f"bytes differ from gguf-py's at byte {first_difference(want, data)} of {len(want)}"
        if problem:
            report["mismatches"].append({"tensor": tensor.name, "problem": problem})
    report["metadata_mismatches"] = check_metadata(original, quantized, argv[3])
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
