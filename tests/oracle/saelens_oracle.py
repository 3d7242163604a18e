#!/usr/bin/env python3
"""SAELens itself (the sae-lens package, with torch) as the oracle of lathe's SAE files.

    saelens_oracle.py check        # exits 3 when sae_lens or torch does not import
    saelens_oracle.py encode SAE_DIR ROWS.f32 OUT.f32
        SAELens loads SAE_DIR (SAE.load_from_disk: cfg.json + sae_weights.safetensors, e.g. written
        by `lathe sae-train`) and encodes the rows (raw float32, n x d_in); the features go to
        OUT.f32 (raw float32, n x d_sae). Prints {"architecture", "d_in", "d_sae", "rows"}.
    saelens_oracle.py write OUT_DIR ARCHITECTURE D_IN D_SAE K SEED
        SAELens builds an SAE (StandardSAE / JumpReLUSAE / TopKSAE with its config class), gives
        it random weights (seeded; b_enc and JumpReLU thresholds random too, so that both matter)
        and saves it with save_model(); then encodes 64 random rows and writes them and the
        features as OUT_DIR/rows.f32 and OUT_DIR/features.f32 for lathe to compare against.
"""
import json
import pathlib
import sys


def need():
    try:
        import torch  # noqa: F401
        import sae_lens  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure means: no oracle here
        print(f"sae_lens/torch unavailable: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(3)


def encode(sae_dir, rows_path, out_path):
    import numpy as np
    import torch
    from sae_lens import SAE
    sae = SAE.load_from_disk(sae_dir, device="cpu")
    d_in = sae.cfg.d_in
    rows = np.fromfile(rows_path, dtype=np.float32).reshape(-1, d_in)
    with torch.no_grad():
        feats = sae.encode(torch.from_numpy(rows)).to(torch.float32).numpy()
    feats.astype(np.float32).tofile(out_path)
    print(json.dumps({"architecture": sae.cfg.architecture(), "d_in": d_in, "d_sae": sae.cfg.d_sae,
                      "rows": int(rows.shape[0])}))


def write(out_dir, architecture, d_in, d_sae, k, seed):
    import numpy as np
    import torch
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig
    torch.manual_seed(seed)
    if architecture == "standard":
        sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae, dtype="float32", device="cpu"))
    elif architecture == "jumprelu":
        sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae, dtype="float32", device="cpu"))
    elif architecture == "topk":
        sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k, dtype="float32", device="cpu"))
    else:
        sys.exit(f"unknown architecture {architecture}")
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d_in, d_sae) / d_in ** 0.5)
        sae.W_dec.copy_(torch.randn(d_sae, d_in) / d_sae ** 0.5)
        sae.b_enc.copy_(torch.randn(d_sae) * 0.1 - 0.05)
        sae.b_dec.copy_(torch.randn(d_in) * 0.1)
        if architecture == "jumprelu":
            sae.threshold.copy_(torch.rand(d_sae) * 0.3)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sae.cfg.metadata.hook_name = "blocks.1.hook_resid_post"
    sae.save_model(out)
    rows = torch.randn(64, d_in)
    with torch.no_grad():
        feats = sae.encode(rows)
    rows.numpy().astype(np.float32).tofile(out / "rows.f32")
    feats.numpy().astype(np.float32).tofile(out / "features.f32")
    print(json.dumps({"architecture": architecture, "d_in": d_in, "d_sae": d_sae,
                      "active_per_row": float((feats > 0).sum(dim=1).float().mean())}))


def main():
    need()
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    mode = sys.argv[1]
    if mode == "check":
        return
    if mode == "encode" and len(sys.argv) == 5:
        encode(*sys.argv[2:5])
    elif mode == "write" and len(sys.argv) == 8:
        write(sys.argv[2], sys.argv[3], *(int(x) for x in sys.argv[4:8]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
