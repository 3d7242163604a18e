"""safetensors oracle for lathe's tests (python safetensors, the reference implementation).

  describe FILE      print {"metadata": {...}, "tensors": [{name, dtype, shape, sha256}]} for FILE,
                     read with safetensors.numpy.load_file (plus deserialize() for the raw bytes of
                     dtypes numpy lacks, such as BF16); exits 1 if the two readers disagree
  write DIR          write DIR/numpy.safetensors with safetensors.numpy.save_file and
                     DIR/bf16.safetensors with serialize_file (numpy has no bfloat16), then print
                     {"files": {file name: description}} computed from the source arrays
  check-reject FILE  print "rejected: <reason>" if the reference refuses FILE, else "accepted"
"""
import hashlib
import json
import sys

import numpy as np
from safetensors import SafetensorError, TensorSpec, deserialize, safe_open, serialize_file
from safetensors.numpy import load_file, save_file

NUMPY_DTYPES = {"F64", "F32", "F16", "I64", "U64", "I32", "U32", "I16", "U16", "I8", "U8", "BOOL", "C64"}
DTYPE_NAMES = {
    np.dtype(np.float64): "F64", np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
    np.dtype(np.int64): "I64", np.dtype(np.int32): "I32", np.dtype(np.int16): "I16",
    np.dtype(np.int8): "I8", np.dtype(np.uint8): "U8", np.dtype(np.bool_): "BOOL",
}


def sha256(data):
    return hashlib.sha256(bytes(data)).hexdigest()


def describe(path):
    with open(path, "rb") as f:
        raw = dict(deserialize(f.read()))
    numpy_tensors = {}
    with safe_open(path, framework="np") as f:
        metadata = f.metadata() or {}
        for name, view in raw.items():
            if view["dtype"] in NUMPY_DTYPES:
                numpy_tensors[name] = f.get_tensor(name)
    if all(v["dtype"] in NUMPY_DTYPES for v in raw.values()):
        numpy_tensors = load_file(path)
    tensors = []
    for name, view in sorted(raw.items()):
        digest = sha256(view["data"])
        if name in numpy_tensors:
            arr = numpy_tensors[name]
            if list(arr.shape) != list(view["shape"]) or sha256(arr.tobytes()) != digest:
                print(f"numpy loading and deserialize disagree on {name}", file=sys.stderr)
                sys.exit(1)
        elif view["dtype"] in NUMPY_DTYPES:
            print(f"numpy loading missed {name}", file=sys.stderr)
            sys.exit(1)
        tensors.append({"name": name, "dtype": view["dtype"], "shape": list(view["shape"]), "sha256": digest})
    return {"metadata": metadata, "tensors": tensors}


def describe_arrays(arrays, metadata, dtype_of=lambda a: DTYPE_NAMES[a.dtype]):
    tensors = [{"name": k, "dtype": dtype_of(v), "shape": list(v.shape), "sha256": sha256(v.tobytes())}
               for k, v in sorted(arrays.items())]
    return {"metadata": metadata, "tensors": tensors}


def write(directory):
    rng = np.random.default_rng(1234)
    arrays = {
        "f32.matrix": rng.standard_normal((3, 5)).astype(np.float32),
        "f16.vector": rng.standard_normal(7).astype(np.float16),
        "f64.cube": rng.standard_normal((2, 2, 3)).astype(np.float64),
        "i8": rng.integers(-128, 128, size=(4, 3), dtype=np.int8),
        "u8": rng.integers(0, 256, size=(9,), dtype=np.uint8),
        "i16": rng.integers(-30000, 30000, size=(2, 3), dtype=np.int16),
        "i32": rng.integers(-2**31, 2**31, size=(5,), dtype=np.int32),
        "i64": rng.integers(-2**62, 2**62, size=(3,), dtype=np.int64),
        "bool": rng.integers(0, 2, size=(6,)).astype(np.bool_),
        "scalar": np.array(2.5, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }
    metadata = {"format": "np"}
    save_file(arrays, f"{directory}/numpy.safetensors", metadata=metadata)

    # BF16 as raw uint16 bit patterns (numpy has no bfloat16 type).
    bf16 = rng.integers(0, 2**16, size=(4, 2), dtype=np.uint16)
    bias = rng.standard_normal(3).astype(np.float32)
    specs = {
        "bf16.weight": TensorSpec(dtype="bfloat16", shape=bf16.shape, data_ptr=bf16.ctypes.data, data_len=bf16.nbytes),
        "f32.bias": TensorSpec(dtype="float32", shape=bias.shape, data_ptr=bias.ctypes.data, data_len=bias.nbytes),
    }
    serialize_file(specs, f"{directory}/bf16.safetensors", metadata=None)
    bf16_desc = describe_arrays({"bf16.weight": bf16, "f32.bias": bias}, {},
                                dtype_of=lambda a: "BF16" if a.dtype == np.uint16 else DTYPE_NAMES[a.dtype])
    return {"files": {"numpy.safetensors": describe_arrays(arrays, metadata), "bf16.safetensors": bf16_desc}}


def check_reject(path):
    with open(path, "rb") as f:
        data = f.read()
    try:
        deserialize(data)
    except SafetensorError as e:
        return f"rejected: {e}"
    return "accepted"


def main():
    command, arg = sys.argv[1], sys.argv[2]
    if command == "describe":
        print(json.dumps(describe(arg)))
    elif command == "write":
        print(json.dumps(write(arg)))
    elif command == "check-reject":
        print(check_reject(arg))
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
