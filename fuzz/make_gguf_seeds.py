#!/usr/bin/env python3
"""Writes the GGUF fuzzing seed corpus (fuzz/corpus/gguf/): small valid files covering every value
type, nested arrays, custom alignment, v2 and several tensor types. Run once; the outputs are committed."""
import struct, os
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "gguf")
U8,I8,U16,I16,U32,I32,F32,BOOL,STR,ARR,U64,I64,F64 = range(13)
def s(x): x = x.encode() if isinstance(x,str) else x; return struct.pack("<Q", len(x)) + x
def hdr(v, nt, nkv): return b"GGUF" + struct.pack("<IQQ", v, nt, nkv)
def kv(k, t, payload): return s(k) + struct.pack("<I", t) + payload
def arr(t, items): return struct.pack("<IQ", t, len(items)) + b"".join(items)
def tinfo(name, dims, typ, off): return s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", typ, off)
def pad(b, a): return b + b"\0" * ((-len(b)) % a)
files = {}
files["empty_v3.gguf"] = hdr(3, 0, 0)
files["scalars_v2.gguf"] = hdr(2, 0, 13) + b"".join([
  kv("u8", U8, struct.pack("<B", 7)), kv("i8", I8, struct.pack("<b", -7)),
  kv("u16", U16, struct.pack("<H", 700)), kv("i16", I16, struct.pack("<h", -700)),
  kv("u32", U32, struct.pack("<I", 70000)), kv("i32", I32, struct.pack("<i", -70000)),
  kv("f32", F32, struct.pack("<f", 0.5)), kv("bool", BOOL, b"\1"),
  kv("general.name", STR, s("seed")), kv("u64", U64, struct.pack("<Q", 2**63)),
  kv("i64", I64, struct.pack("<q", -2**40)), kv("f64", F64, struct.pack("<d", 1e-5)),
  kv("general.alignment", U32, struct.pack("<I", 16))])
nested = arr(ARR, [arr(I16, [struct.pack("<h", -1), struct.pack("<h", 2)]), arr(STR, [s("a"), s("")]),
                   arr(ARR, [arr(F32, [struct.pack("<f", 1.0)]), arr(U8, [])])])
h = hdr(3, 2, 3) + kv("general.architecture", STR, s("llama")) + kv("general.alignment", U32, struct.pack("<I", 64)) \
    + kv("nested", ARR, nested) + tinfo("a.weight", [4, 2], 0, 0) + tinfo("b.weight", [32], 8, 64)
files["nested_tensors.gguf"] = pad(pad(h, 64) + bytes(range(32)), 64) + bytes(range(34))
tok = hdr(3, 1, 4) + kv("tokenizer.ggml.model", STR, s("gpt2")) + kv("tokenizer.ggml.tokens", ARR, arr(STR, [s(t) for t in ["<s>", "</s>", "a", "b", "ab"]])) \
    + kv("tokenizer.ggml.token_type", ARR, arr(I32, [struct.pack("<i", t) for t in [3, 3, 1, 1, 1]])) \
    + kv("tokenizer.ggml.merges", ARR, arr(STR, [s("a b")])) + tinfo("token_embd.weight", [32, 2], 3, 0)
files["tokenizer_q4_1.gguf"] = pad(tok, 32) + bytes((i * 37) & 255 for i in range(40))
files["scalar_tensor_f16.gguf"] = pad(hdr(3, 2, 0) + tinfo("s", [], 1, 0) + tinfo("v", [3, 1, 1, 1], 0, 32), 32) + b"\x00\x3c" + b"\0" * 30 + bytes(12)
for name, data in files.items():
    assert len(data) < 4096
    open(os.path.join(out, name), "wb").write(data)
    print(name, len(data))
