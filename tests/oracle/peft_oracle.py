#!/usr/bin/env python3
"""PyTorch + PEFT as the oracle of lathe's LoRA training (issue 24). Run by
tests/train/test_peft_oracle.cpp, which prepares every input with lathe; this script only reads
them and prints one JSON report (the test holds the tolerances).

  peft_oracle.py check
      Exit 0 when torch, transformers, peft and safetensors import, 3 (the test then skips) when not.

  peft_oracle.py compare --config RUN.json
      RUN.json (written by the test):
        hf_model       the base model as a Hugging Face directory (`lathe convert`, F32: the exact
                       weights lathe's training pass dequantizes)
        initial        PEFT directory: the adapter lathe's run started from (train::init_lora,
                       written by train::write_peft_adapter)
        final          PEFT directory: `lathe finetune --peft-out` of that run
        grads          PEFT-shaped directory whose lora_A / lora_B hold lathe's gradients
                       (train::lora_forward_backward) of the final adapter on example
                       `grad_example`; `grad_loss` is that pass's loss
        examples       [{"tokens": [...], "targets": [...]}] (targets[t]: the token predicted at
                       position t, -1: not scored), as lathe's data reader made them
        order          the example of each optimizer step (lathe's seeded order)
        log            lathe's --log JSONL (step, loss, grad_norm, lr per step)
        lathe_logits   directory of logits_<i>.f32: lathe's inference engine on example i with
                       the final adapter merged by --lora ([n_tokens x n_vocab] float32)
        lathe_score    `lathe score --lora --json` of the same examples (per-example logprob)
        lr, betas, eps, weight_decay, warmup, schedule (linear|cosine|constant), max_grad_norm,
        steps, threads, dtype (float32|float64)

      Four comparisons, reported as JSON:
        export:    PeftModel.from_pretrained(hf_model, final) against lathe's engine with the same
                   adapter (logits; per-example log-probabilities against lathe score), the
                   adapter's own effect (PEFT with and without it), and the same adapter with the
                   Q/K rows of lora_B left in llama.cpp's order (what a missing permutation would
                   give) against lathe;
        gradients: autograd of the same loss on the final adapter against lathe's gradients;
        training:  the same run in PyTorch (same initial adapter, example order, AdamW settings,
                   schedule and clipping): per-step loss, gradient norm and learning rate against
                   lathe's log, then the final adapters against lathe's export.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

T0 = time.time()


def note(msg):
    print(f"[{time.time() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def check():
    try:
        import peft  # noqa: F401
        import safetensors  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        print(f"torch + transformers + peft + safetensors are needed: {e}", file=sys.stderr)
        return 3
    print(json.dumps({"torch": torch.__version__, "peft": peft.__version__, "transformers": transformers.__version__}))
    return 0


def hf_to_gguf_rows(w, n_head):
    """convert_hf_to_gguf.py's LlamaModel.permute: Hugging Face's Q/K row order -> llama.cpp's."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class Diff:
    """Accumulates |a - b| over logits rows [n x vocab]; a is the candidate, b the reference."""

    def __init__(self):
        self.positions = self.agree = 0
        self.sum_abs = self.sum_ref = 0.0
        self.max_abs = self.max_ref = 0.0

    def add(self, a, b):
        a = np.asarray(a, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        d = np.abs(a - b)
        self.positions += a.shape[0]
        self.agree += int((a.argmax(1) == b.argmax(1)).sum())
        self.sum_abs += float(d.mean(1).sum())
        self.max_abs = max(self.max_abs, float(d.max()))
        self.sum_ref += float(np.abs(b).mean(1).sum())
        self.max_ref = max(self.max_ref, float(np.abs(b).max()))

    def report(self):
        n = max(self.positions, 1)
        return {"positions": self.positions, "top1_agreement": self.agree / n, "mean_abs_diff": self.sum_abs / n,
                "max_abs_diff": self.max_abs, "mean_abs_logit": self.sum_ref / n, "max_abs_logit": self.max_ref}


def rel(a, b):
    """||a - b|| / ||b|| in float64."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def compare(config_path):
    import torch
    import torch.nn.functional as F
    from peft import PeftModel
    from safetensors.numpy import load_file
    from transformers import AutoModelForCausalLM

    cfg = json.loads(Path(config_path).read_text())
    torch.set_num_threads(int(cfg.get("threads", 2)))
    torch.manual_seed(0)
    dtype = {"float32": torch.float32, "float64": torch.float64}[cfg.get("dtype", "float32")]
    examples = cfg["examples"]
    report = {"dtype": cfg.get("dtype", "float32"), "torch": torch.__version__}

    def base_model():
        m = AutoModelForCausalLM.from_pretrained(cfg["hf_model"], torch_dtype=dtype, attn_implementation="eager")
        m.eval()  # no dropout anywhere (SmolLM2 has none, and PEFT's lora_dropout is 0)
        return m

    def tensors(e):
        ids = torch.tensor([e["tokens"]], dtype=torch.long)
        targets = torch.tensor(e["targets"], dtype=torch.long)
        return ids, targets

    def loss_of(model, e):
        """lathe's loss: the mean cross-entropy over the scored positions, computed in float64."""
        ids, targets = tensors(e)
        logits = model(input_ids=ids).logits[0]
        mask = targets >= 0
        return F.cross_entropy(logits[mask].double(), targets[mask]), logits

    # 1. The export: PEFT loads lathe's adapter and computes lathe's function.
    note("loading the base model and lathe's final adapter")
    model = PeftModel.from_pretrained(base_model(), cfg["final"], is_trainable=True)
    n_head, n_head_kv = model.config.num_attention_heads, model.config.num_key_value_heads
    score = json.loads(Path(cfg["lathe_score"]).read_text())["per_example"]
    ours_vs_lathe, effect, wrong_order = Diff(), Diff(), Diff()
    logprob_abs, logprob_rel = 0.0, 0.0
    peft_logits = []
    with torch.no_grad():
        for i, e in enumerate(examples):
            ids, targets = tensors(e)
            theirs = np.fromfile(Path(cfg["lathe_logits"]) / f"logits_{i}.f32", dtype="<f4")
            theirs = theirs.reshape(len(e["tokens"]), -1)
            logits = model(input_ids=ids).logits[0]
            ours = logits.numpy()
            if ours.shape != theirs.shape:
                raise SystemExit(f"example {i}: PEFT logits {ours.shape} vs lathe {theirs.shape}")
            peft_logits.append(ours)
            ours_vs_lathe.add(ours, theirs)
            with model.disable_adapter():
                effect.add(model(input_ids=ids).logits[0].numpy(), ours)
            mask = targets >= 0
            lp = float(torch.log_softmax(logits.double(), -1)[mask].gather(1, targets[mask][:, None]).sum())
            logprob_abs = max(logprob_abs, abs(lp - score[i]["logprob"]))
            logprob_rel = max(logprob_rel, abs(lp - score[i]["logprob"]) / max(abs(score[i]["logprob"]), 1e-30))
        # The same adapter with lora_B's Q/K rows in llama.cpp's order instead of Hugging Face's.
        changed = 0
        for name, p in model.named_parameters():
            if "lora_B" in name and (".q_proj." in name or ".k_proj." in name):
                p.copy_(hf_to_gguf_rows(p.detach().clone(), n_head if ".q_proj." in name else n_head_kv))
                changed += 1
        for i, e in enumerate(examples):
            ids, _ = tensors(e)
            theirs = np.fromfile(Path(cfg["lathe_logits"]) / f"logits_{i}.f32", dtype="<f4")
            wrong_order.add(model(input_ids=ids).logits[0].numpy(), theirs.reshape(len(e["tokens"]), -1))
    report["export"] = {"peft_vs_lathe": ours_vs_lathe.report(), "adapter_effect": effect.report(),
                        "qk_gguf_order_vs_lathe": wrong_order.report(), "qk_matrices_permuted": changed,
                        "logprob_max_abs_diff": logprob_abs, "logprob_max_rel_diff": logprob_rel}
    note(f"export: {json.dumps(report['export'])}")

    # 2. Gradients of the final adapter on one example.
    del model
    model = PeftModel.from_pretrained(base_model(), cfg["final"], is_trainable=True)
    lathe_grads = load_file(str(Path(cfg["grads"]) / "adapter_model.safetensors"))
    loss, _ = loss_of(model, examples[cfg["grad_example"]])
    loss.backward()
    worst, worst_name, sq_diff, sq_ref, n_grads = 0.0, "", 0.0, 0.0, 0
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = name.replace(".default.weight", ".weight")
        if key not in lathe_grads:
            raise SystemExit(f"lathe's gradients have no {key}")
        g = p.grad.detach().double().numpy()
        r = rel(lathe_grads[key], g)
        if r > worst:
            worst, worst_name = r, key
        sq_diff += float(np.sum((lathe_grads[key].astype(np.float64) - g) ** 2))
        sq_ref += float(np.sum(g ** 2))
        n_grads += 1
    if n_grads != len(lathe_grads):
        raise SystemExit(f"PEFT trains {n_grads} tensors, lathe's gradients have {len(lathe_grads)}")
    report["gradients"] = {"tensors": n_grads, "loss_torch": float(loss), "loss_lathe": cfg["grad_loss"],
                           "loss_rel_diff": abs(float(loss) - cfg["grad_loss"]) / abs(float(loss)),
                           "global_rel_diff": (sq_diff / sq_ref) ** 0.5, "max_tensor_rel_diff": worst,
                           "worst_tensor": worst_name, "grad_norm": sq_ref ** 0.5}
    note(f"gradients: {json.dumps(report['gradients'])}")

    # 3. The same training run in PyTorch.
    del model
    model = PeftModel.from_pretrained(base_model(), cfg["initial"], is_trainable=True)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg["lr"], betas=tuple(cfg["betas"]), eps=cfg["eps"],
                            weight_decay=cfg["weight_decay"], foreach=False)
    from transformers import (get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup,
                              get_linear_schedule_with_warmup)
    if cfg["schedule"] == "linear":
        sched = get_linear_schedule_with_warmup(opt, cfg["warmup"], cfg["steps"])
    elif cfg["schedule"] == "cosine":
        sched = get_cosine_schedule_with_warmup(opt, cfg["warmup"], cfg["steps"])
    else:
        sched = get_constant_schedule_with_warmup(opt, cfg["warmup"])
    log = [json.loads(line) for line in Path(cfg["log"]).read_text().splitlines() if line.strip()]
    if len(log) != cfg["steps"] or len(cfg["order"]) != cfg["steps"]:
        raise SystemExit(f"{len(log)} log lines and {len(cfg['order'])} orders for {cfg['steps']} steps")
    steps = []
    for step, idx in enumerate(cfg["order"]):
        lr = sched.get_last_lr()[0]
        loss, _ = loss_of(model, examples[idx])
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(params, cfg["max_grad_norm"])) if cfg["max_grad_norm"] > 0 else 0
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        entry = log[step]
        steps.append({"step": step + 1, "example": idx, "loss_torch": float(loss), "loss_lathe": entry["loss"],
                      "loss_rel_diff": abs(float(loss) - entry["loss"]) / abs(float(loss)),
                      "grad_norm_torch": norm, "grad_norm_lathe": entry["grad_norm"],
                      "grad_norm_rel_diff": abs(norm - entry["grad_norm"]) / max(norm, 1e-30),
                      "lr_torch": lr, "lr_lathe": entry["lr"]})
        note(f"step {step + 1}: torch {float(loss):.6f} lathe {entry['loss']:.6f}")
    final = load_file(str(Path(cfg["final"]) / "adapter_model.safetensors"))
    start = load_file(str(Path(cfg["initial"]) / "adapter_model.safetensors"))
    worst, worst_name, sq_diff, sq_ref, n_final = 0.0, "", 0.0, 0.0, 0
    sq_update = 0.0  # ||final - initial|| of PyTorch's run: how far training moved the adapters
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = name.replace(".default.weight", ".weight")
        t = p.detach().double().numpy()
        r = rel(final[key], t)
        if r > worst:
            worst, worst_name = r, key
        sq_diff += float(np.sum((final[key].astype(np.float64) - t) ** 2))
        sq_ref += float(np.sum(t ** 2))
        sq_update += float(np.sum((t - start[key].astype(np.float64)) ** 2))
        n_final += 1
    # The final adapters' function: PyTorch's trained model against PEFT with lathe's export.
    fn = Diff()
    with torch.no_grad():
        for i, e in enumerate(examples):
            ids, _ = tensors(e)
            fn.add(model(input_ids=ids).logits[0].numpy(), peft_logits[i])
    report["training"] = {
        "steps": steps,
        "loss_max_rel_diff": max(s["loss_rel_diff"] for s in steps),
        "loss_max_rel_diff_first3": max(s["loss_rel_diff"] for s in steps[:3]),
        "grad_norm_max_rel_diff": max(s["grad_norm_rel_diff"] for s in steps),
        "grad_norm_max_rel_diff_first3": max(s["grad_norm_rel_diff"] for s in steps[:3]),
        "lr_max_abs_diff": max(abs(s["lr_torch"] - s["lr_lathe"]) for s in steps),
        "first_loss": steps[0]["loss_torch"], "last_loss": steps[-1]["loss_torch"],
        "final_tensors": n_final, "final_global_rel_diff": (sq_diff / sq_ref) ** 0.5,
        "final_update_rel_diff": (sq_diff / sq_update) ** 0.5, "final_max_tensor_rel_diff": worst, "final_worst_tensor": worst_name,
        "final_logits_torch_vs_lathe_export": fn.report(),
    }
    note("training: " + json.dumps({k: v for k, v in report["training"].items() if k != "steps"}))
    print(json.dumps(report))
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("check")
    c = sub.add_parser("compare")
    c.add_argument("--config", required=True)
    args = p.parse_args()
    return check() if args.command == "check" else compare(args.config)


if __name__ == "__main__":
    sys.exit(main())
