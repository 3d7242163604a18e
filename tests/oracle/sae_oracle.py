#!/usr/bin/env python3
"""Reference for lathe's SAE loading, encoding and feature gate (tests/edit/test_sae_oracle.cpp).

Usage:
  sae_oracle.py case OUTDIR CASE.json
      CASE.json: {"architecture": "standard" | "jumprelu" | "topk", "dtype": "F32" | "F16" | "BF16",
                  "normalize": "none" | "constant_norm_rescale" | "layer_norm",
                  "apply_b_dec": bool, "cfg_style": "v6" | "legacy", "d_in", "d_sae", "k", "rows",
                  "seed", "clamp_everywhere": bool}
      Writes an SAE with random weights in SAELens's format to OUTDIR/sae (cfg.json +
      sae_weights.safetensors, written by the safetensors package; BF16 by hand, numpy has no
      bfloat16), picks a feature spec that edits active and inactive features, and writes
      OUTDIR/expected.safetensors: "x" [rows, d_in] (the input rows), "f" [rows, d_sae] (the
      encoding) and "gated" [rows, d_in] (the stream after the gate), with the spec in the
      metadata key "features".

  sae_oracle.py encode SAE_DIR ROWS.safetensors OUT.safetensors
      Reads an SAE that lathe wrote (sae-train: SAELens's cfg.json + sae_weights.safetensors, read
      here with json + safetensors.numpy) and the rows "x" [rows, d_in]; writes "f" [rows, d_sae],
      the encoding by SAELens's formula in float64, and "gap" [rows], per row the distance between
      the k-th and (k+1)-th largest pre-activation (topk; +inf otherwise), so that a caller can
      leave out rows where float32 could pick another feature.

The formulas follow SAELens (sae_lens/saes/*.py), computed here in float64 from the stored
values:
  sae_in = norm_in(x) - b_dec * apply_b_dec_to_input;  pre = sae_in @ W_enc + b_enc
  standard: relu(pre); jumprelu: relu(pre) * (pre > threshold);
  topk: torch.topk(pre, k) values through relu, scattered into zeros
  decode(f) = norm_out(f @ W_dec + b_dec)
  constant_norm_rescale: c = sqrt(d_in) / |x|; in: x * c, out: y / c
  layer_norm: mu = mean(x), s = std(x, ddof=1); in: (x - mu) / (s + 1e-5), out: y * s + mu
The gate is SAELens's forward with use_error_term=True and a hook on hook_sae_acts_post that edits
the features: out = decode(f') + (x - decode(f)). Feature spec: ID -> 0, ID:V -> V where f > 0
(everywhere with clamp_everywhere), ID*S -> f * S.
Rows are drawn so that no pre-activation lies within 1e-3 of a decision boundary (0, a threshold,
the k-th largest value), where float32 and float64 could disagree.
"""
import json
import os
import struct
import sys

import numpy as np
from safetensors.numpy import save_file

MARGIN = 1e-3


def to_bf16_bits(a):
    """Rounds float32 to bfloat16 (nearest even), as torch does; returns the uint16 bits."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def from_bf16_bits(b):
    return (b.astype(np.uint32) << 16).view(np.float32)


def stored(a, dtype):
    """The values as the file stores them, back in float64 (what any reader computes with)."""
    a = a.astype(np.float32)
    if dtype == "F16":
        return a.astype(np.float16).astype(np.float64)
    if dtype == "BF16":
        return from_bf16_bits(to_bf16_bits(a)).astype(np.float64)
    return a.astype(np.float64)


def write_bf16_safetensors(path, tensors):
    """A safetensors file of BF16 tensors laid out as the reference serializer does."""
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        data = to_bf16_bits(tensors[name]).tobytes()
        header[name] = {"dtype": "BF16", "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def norm_in(x, normalize, d_in):
    if normalize == "constant_norm_rescale":
        c = np.sqrt(d_in) / np.linalg.norm(x, axis=-1, keepdims=True)
        return x * c, (lambda y: y / c)
    if normalize == "layer_norm":
        mu = x.mean(axis=-1, keepdims=True)
        s = (x - mu).std(axis=-1, ddof=1, keepdims=True)
        return (x - mu) / (s + 1e-5), (lambda y: y * s + mu)
    return x, (lambda y: y)


def pre_activations(w, x, case):
    sae_in, out = norm_in(x, case["normalize"], case["d_in"])
    if case["apply_b_dec"]:
        sae_in = sae_in - w["b_dec"]
    return sae_in @ w["W_enc"] + w["b_enc"], out


def activate(w, pre, case):
    relu = np.maximum(pre, 0.0)
    if case["architecture"] == "jumprelu":
        return relu * (pre > w["threshold"])
    if case["architecture"] == "topk":
        f = np.zeros_like(pre)
        top = np.argsort(-pre, axis=-1, kind="stable")[:, : case["k"]]
        rows = np.arange(pre.shape[0])[:, None]
        f[rows, top] = relu[rows, top]
        return f
    return relu


def decode(w, f, out):
    return out(f @ w["W_dec"] + w["b_dec"])


def far_from_boundaries(w, pre, case):
    if np.min(np.abs(pre)) < MARGIN:
        return False
    if case["architecture"] == "jumprelu" and np.min(np.abs(pre - w["threshold"])) < MARGIN:
        return False
    if case["architecture"] == "topk":
        s = np.sort(pre)[::-1]
        if s[case["k"] - 1] - s[case["k"]] < MARGIN:
            return False
    return True


def random_rows(rng, w, case):
    rows = []
    while len(rows) < case["rows"]:
        # An offset and a scale, so that the normalizations do something; float32 values, as lathe reads them.
        x = (rng.normal(0.0, 1.0, size=(1, case["d_in"])) * 3.0 + 0.5).astype(np.float32).astype(np.float64)
        pre, _ = pre_activations(w, x, case)
        if far_from_boundaries(w, pre[0], case):
            rows.append(x[0])
    return np.array(rows)


def pick_features(f):
    """A spec editing the most active feature (ablate), one active on some rows only (clamp to a
    negative value), one (scale), and one never active (clamp: only with clamp_everywhere)."""
    active = (f > 0).sum(axis=0)
    order = np.argsort(-f.sum(axis=0), kind="stable")
    top = int(order[0])
    partial = [int(j) for j in order if 0 < active[j] < f.shape[0] and j != top]
    never = [int(j) for j in range(f.shape[1]) if active[j] == 0]
    items = [f"{top}"]
    if partial:
        items.append(f"{partial[0]}:-3.5")
    if len(partial) > 1:
        items.append(f"{partial[1]}*0.25")
    if never:
        items.append(f"{never[0]}:2")
    return ",".join(items)


def edit(f, spec, clamp_everywhere):
    g = f.copy()
    for item in spec.split(","):
        if ":" in item:
            j, v = item.split(":")
            j = int(j)
            mask = np.ones(f.shape[0], bool) if clamp_everywhere else f[:, j] > 0
            g[mask, j] = float(v)
        elif "*" in item:
            j, s = item.split("*")
            g[:, int(j)] = f[:, int(j)] * float(s)
        else:
            g[:, int(item)] = 0.0
    return g


def weights(rng, case):
    d_in, d_sae = case["d_in"], case["d_sae"]
    w = {
        "W_enc": rng.normal(0.0, 1.0 / np.sqrt(d_in), size=(d_in, d_sae)),
        "b_enc": rng.normal(-0.1, 0.2, size=(d_sae,)),
        "W_dec": rng.normal(0.0, 1.0 / np.sqrt(d_sae), size=(d_sae, d_in)),
        "b_dec": rng.normal(0.0, 0.3, size=(d_in,)),
    }
    if case["architecture"] == "jumprelu":
        w["threshold"] = rng.uniform(0.05, 0.6, size=(d_sae,))
    return {k: v.astype(np.float32) for k, v in w.items()}


def cfg_json(case):
    hook = "blocks.2.hook_resid_post"
    common = {"d_in": case["d_in"], "d_sae": case["d_sae"], "dtype": "float32", "device": "cpu",
              "apply_b_dec_to_input": case["apply_b_dec"], "normalize_activations": case["normalize"]}
    if case["cfg_style"] == "legacy":  # SAELens < 6: hook at the top level, topk as an activation
        cfg = dict(common, architecture="standard", hook_name=hook, hook_layer=2, hook_head_index=None,
                   model_name="tiny", finetuning_scaling_factor=False, sae_lens_training_version="5.3.0")
        if case["architecture"] == "topk":
            cfg.update(activation_fn_str="topk", activation_fn_kwargs={"k": case["k"]})
        else:
            cfg.update(architecture=case["architecture"], activation_fn_str="relu")
        return cfg
    cfg = dict(common, architecture=case["architecture"], reshape_activations="none",
               metadata={"hook_name": hook, "model_name": "tiny", "sae_lens_version": "6.5.1"})
    if case["architecture"] == "topk":
        cfg["k"] = case["k"]
    return cfg


def write_case(outdir, case):
    rng = np.random.default_rng(case["seed"])
    w32 = weights(rng, case)
    sae_dir = os.path.join(outdir, "sae")
    os.makedirs(sae_dir, exist_ok=True)
    with open(os.path.join(sae_dir, "cfg.json"), "w") as f:
        json.dump(cfg_json(case), f, indent=2)
    path = os.path.join(sae_dir, "sae_weights.safetensors")
    if case["dtype"] == "BF16":
        write_bf16_safetensors(path, w32)
    else:
        np_type = np.float16 if case["dtype"] == "F16" else np.float32
        save_file({k: v.astype(np_type) for k, v in w32.items()}, path)
    w = {k: stored(v, case["dtype"]) for k, v in w32.items()}

    x = random_rows(rng, w, case)
    pre, out = pre_activations(w, x, case)
    f = activate(w, pre, case)
    spec = pick_features(f)
    gated = decode(w, edit(f, spec, case["clamp_everywhere"]), out) + (x - decode(w, f, out))
    save_file({"x": x.astype(np.float32), "f": f.astype(np.float32), "gated": gated.astype(np.float32)},
              os.path.join(outdir, "expected.safetensors"), metadata={"features": spec})


def encode_files(sae_dir, rows_path, out_path):
    from safetensors.numpy import load_file
    with open(os.path.join(sae_dir, "cfg.json")) as f:
        cfg = json.load(f)
    w = {k: v.astype(np.float64) for k, v in load_file(os.path.join(sae_dir, "sae_weights.safetensors")).items()}
    case = {"architecture": cfg.get("architecture", "standard"), "k": cfg.get("k", 0),
            "normalize": cfg.get("normalize_activations", "none") or "none",
            "apply_b_dec": cfg.get("apply_b_dec_to_input", True), "d_in": cfg["d_in"]}
    assert w["W_enc"].shape == (cfg["d_in"], cfg["d_sae"]) and w["W_dec"].shape == (cfg["d_sae"], cfg["d_in"])
    x = load_file(rows_path)["x"].astype(np.float64)
    pre, _ = pre_activations(w, x, case)
    f = activate(w, pre, case)
    gap = np.full(x.shape[0], np.inf)
    if case["architecture"] == "topk" and case["k"] < pre.shape[1]:
        s = -np.sort(-pre, axis=-1)
        gap = s[:, case["k"] - 1] - s[:, case["k"]]
    save_file({"f": f.astype(np.float32), "gap": gap.astype(np.float32)}, out_path)


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "encode":
        encode_files(sys.argv[2], sys.argv[3], sys.argv[4])
        return 0
    if len(sys.argv) == 4 and sys.argv[1] == "case":
        with open(sys.argv[3]) as f:
            write_case(sys.argv[2], json.load(f))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
