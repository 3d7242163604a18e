#!/usr/bin/env python3
"""Python peers for lathe's control vectors and prompt files (tests/edit/test_control_vector_oracle.cpp).

Usage:
  control_vector_oracle.py read FILE.gguf
      gguf-py's GGUFReader view of a control vector as JSON: {"architecture", "model_hint",
      "layer_count", "tensors": [{"name", "type", "shape", "values"}...]} (file order).
  control_vector_oracle.py write FILE.gguf N_EMBD LAYER[:SEED] ...
      writes a control vector with gguf-py's GGUFWriter as repeng / llama.cpp's generator lay it
      out (general.architecture "controlvector", model_hint, layer_count, F32 direction.N), with
      direction.N[i] = sin(SEED * (i + 1)) (SEED defaults to N), so the reader can check values.
  control_vector_oracle.py pca DIFFS.json
      DIFFS.json: {"rows": [[...], ...]}; prints the unit top right singular vector of the
      (uncentered) matrix, i.e. the top eigenvector of D^T D, from numpy's SVD, sign aligned
      with the mean row, and the two largest singular values: {"direction", "singular_values"}.
  control_vector_oracle.py prompts FILE FORMAT COLUMN
      FORMAT jsonl | csv | txt: the prompts as Python's json / csv (RFC 4180) modules read them,
      as a JSON list.
"""
import csv
import json
import math
import sys

import numpy as np


def read(path):
    from gguf import GGUFReader

    reader = GGUFReader(path)

    def string_field(key):
        field = reader.fields.get(key)
        if field is None:
            return None
        return bytes(field.parts[field.data[0]]).decode("utf-8")

    def int_field(key):
        field = reader.fields.get(key)
        return None if field is None else int(field.parts[field.data[0]][0])

    tensors = []
    for t in reader.tensors:
        tensors.append({
            "name": t.name,
            "type": t.tensor_type.name,
            "shape": [int(d) for d in t.shape],
            "values": [float(v) for v in np.asarray(t.data, dtype=np.float32).reshape(-1)],
        })
    out = {
        "architecture": string_field("general.architecture"),
        "model_hint": string_field("controlvector.model_hint"),
        "layer_count": int_field("controlvector.layer_count"),
        "tensors": tensors,
    }
    sys.stdout.write(json.dumps(out))


def write(path, n_embd, specs):
    import gguf

    writer = gguf.GGUFWriter(path, "controlvector")
    writer.add_string("controlvector.model_hint", "llama")
    writer.add_int32("controlvector.layer_count", len(specs))
    for spec in specs:
        layer, _, seed = spec.partition(":")
        seed = float(seed) if seed else float(layer)
        values = np.array([math.sin(seed * (i + 1)) for i in range(n_embd)], dtype=np.float32)
        writer.add_tensor(f"direction.{layer}", values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def pca(path):
    with open(path, encoding="utf-8") as f:
        rows = np.array(json.load(f)["rows"], dtype=np.float64)
    _, s, vt = np.linalg.svd(rows, full_matrices=False)
    direction = vt[0]
    if direction @ rows.mean(axis=0) < 0:
        direction = -direction
    sys.stdout.write(json.dumps({"direction": direction.tolist(), "singular_values": s[:2].tolist()}))


def prompts(path, fmt, column):
    out = []
    if fmt == "jsonl":
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                value = json.loads(line)
                if isinstance(value, str):
                    out.append(value)
                else:
                    for key in (column, "prompt", "text", "instruction"):
                        if key in value:
                            out.append(value[key])
                            break
    elif fmt == "csv":
        with open(path, encoding="utf-8", newline="") as f:
            rows = [r for r in csv.reader(f, strict=True) if r and any(cell.strip() for cell in r)]
        header = rows[0]
        index = header.index(column) if column in header else 0
        out = [r[index] for r in rows[1:]]
    else:
        with open(path, encoding="utf-8", newline="") as f:
            for line in f.read().split("\n"):
                line = line[:-1] if line.endswith("\r") else line
                if line.strip():
                    out.append(line)
    sys.stdout.write(json.dumps(out))


def main():
    args = sys.argv[1:]
    if len(args) == 2 and args[0] == "read":
        read(args[1])
    elif len(args) >= 4 and args[0] == "write":
        write(args[1], int(args[2]), args[3:])
    elif len(args) == 2 and args[0] == "pca":
        pca(args[1])
    elif len(args) == 4 and args[0] == "prompts":
        prompts(args[1], args[2], args[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
