#!/usr/bin/env python3
"""A random SAE in SAELens's format (cfg.json + sae_weights.safetensors), for timing SAE gates on
models that have no published SAE (the random-weight models of scripts/gpu-check.sh).

    make_random_sae.py OUT_DIR --d-in 896 --d-sae 16384 [--architecture standard|jumprelu|topk]
                       [--k 32] [--hook blocks.12.hook_resid_post] [--seed 0]

Weights: W_enc ~ N(0, 1/d_in), b_enc ~ N(-0.1, 0.05) (so that a few percent of features fire on
unit-scale inputs), W_dec rows unit-norm, b_dec 0, JumpReLU thresholds 0.05. float32.
"""
import argparse
import json
import pathlib

import numpy as np
from safetensors.numpy import save_file


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=pathlib.Path)
    ap.add_argument("--d-in", type=int, required=True)
    ap.add_argument("--d-sae", type=int, default=16384)
    ap.add_argument("--architecture", choices=["standard", "jumprelu", "topk"], default="standard")
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--hook", default="blocks.12.hook_resid_post")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    w_enc = rng.normal(0, 1 / np.sqrt(a.d_in), (a.d_in, a.d_sae)).astype(np.float32)
    w_dec = rng.normal(0, 1, (a.d_sae, a.d_in)).astype(np.float32)
    w_dec /= np.linalg.norm(w_dec, axis=1, keepdims=True)
    tensors = {"W_enc": w_enc, "b_enc": rng.normal(-0.1, 0.05, a.d_sae).astype(np.float32),
               "W_dec": w_dec, "b_dec": np.zeros(a.d_in, np.float32)}
    if a.architecture == "jumprelu":
        tensors["threshold"] = np.full(a.d_sae, 0.05, np.float32)
    cfg = {"architecture": a.architecture, "d_in": a.d_in, "d_sae": a.d_sae, "dtype": "float32",
           "apply_b_dec_to_input": True, "normalize_activations": "none",
           "metadata": {"hook_name": a.hook, "sae_lens_version": "6.5.1"}}
    if a.architecture == "topk":
        cfg["k"] = a.k
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "cfg.json").write_text(json.dumps(cfg, indent=2))
    save_file(tensors, str(a.out / "sae_weights.safetensors"))
    print(f"{a.out}: {a.architecture} SAE {a.d_in} -> {a.d_sae} at {a.hook}")


if __name__ == "__main__":
    main()
