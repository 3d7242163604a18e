#!/usr/bin/env python3
"""Dumps a GGUF file as JSON using gguf-py's GGUFReader (the oracle for lathe's GGUF reader).

Usage: gguf_dump.py FILE.gguf  -> JSON on stdout:
  {"version", "alignment", "data_offset",
   "metadata": [{"key", "type", "value"}...]   (file order; arrays are {"elem_type", "items"},
                                                 nested as they are in the file),
   "tensors": [{"name", "type", "shape", "offset", "file_offset", "n_bytes", "n_elements", "crc32"}...]}
Strings that are not valid UTF-8 are dumped as {"hex": "..."}; non-finite floats as "nan"/"inf"/"-inf".
"""
import json
import math
import sys
import zlib

from gguf import GGUFReader, GGUFValueType


def scalar(part, vtype):
    v = part[0]
    if vtype == GGUFValueType.BOOL:
        return bool(v)
    if vtype in (GGUFValueType.FLOAT32, GGUFValueType.FLOAT64):
        f = float(v)
        if math.isnan(f):
            return "nan"
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return f
    return int(v)


def text(raw):
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"hex": raw.hex()}


def walk(parts, i, vtype):
    """Rebuilds one value from gguf-py's flat parts list; returns (value, next part index)."""
    if vtype == GGUFValueType.STRING:
        return text(bytes(parts[i + 1])), i + 2
    if vtype == GGUFValueType.ARRAY:
        elem_type = GGUFValueType(int(parts[i][0]))
        count = int(parts[i + 1][0])
        i += 2
        items = []
        for _ in range(count):
            item, i = walk(parts, i, elem_type)
            items.append(item)
        return {"elem_type": elem_type.name, "items": items}, i
    return scalar(parts[i], vtype), i + 1


def main():
    reader = GGUFReader(sys.argv[1])
    metadata = []
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue  # header pseudo-fields
        vtype = GGUFValueType(int(field.parts[2][0]))
        value, end = walk(field.parts, 3, vtype)
        assert end == len(field.parts), f"{name}: {end} != {len(field.parts)}"
        metadata.append({"key": name, "type": vtype.name, "value": value})
    tensors = []
    for t in reader.tensors:
        data = reader.data[t.data_offset:t.data_offset + t.n_bytes]
        tensors.append({
            "name": t.name,
            "type": t.tensor_type.name,
            "shape": [int(d) for d in t.shape],
            "offset": int(t.field.parts[5][0]),
            "file_offset": int(t.data_offset),
            "n_bytes": int(t.n_bytes),
            "n_elements": int(t.n_elements),
            "crc32": zlib.crc32(data) & 0xFFFFFFFF,
        })
    out = {
        "version": int(reader.fields["GGUF.version"].parts[0][0]),
        "alignment": int(reader.alignment),
        "data_offset": int(reader.data_offset),
        "metadata": metadata,
        "tensors": tensors,
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
