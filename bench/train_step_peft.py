"""PyTorch + PEFT as the CPU peer of lathe_bench_train_step: one LoRA training step's forward and
backward on the same model, the same sequence and the same adapters, on the CPU.

The model is the GGUF exported by `lathe convert MODEL -o DIR` (float32 safetensors: the
dequantized weights lathe computes with). As in train_step_bench.cpp: tokens[t] = (t * 7919 + 11)
% vocab, every next token scored (the last position is not), LoRA rank R with alpha 2R on q, k, v,
o, gate, up and down projections (PEFT's default init: A kaiming-uniform, B zero). Prints the loss
(to compare with lathe's, the same function) and the seconds of each step, then min and median.

Usage: train_step_peft.py --model DIR [--tokens 32] [--rank 8] [--reps 5] [--threads 2]
"""
import argparse
import time

import torch
import transformers
from peft import LoraConfig, get_peft_model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    model = transformers.AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32)
    config = LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0, bias="none",
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                        "down_proj"])
    model = get_peft_model(model, config)
    model.train()
    vocab = model.config.vocab_size
    ids = torch.tensor([[(t * 7919 + 11) % vocab for t in range(args.tokens)]])
    # labels = ids: transformers shifts them, scoring token t + 1 at position t (not the last).
    times = []
    for rep in range(args.reps + 1):  # the first step warms up
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        seconds = time.perf_counter() - start
        label = "warm-up" if rep == 0 else f"rep {rep}"
        print(f"{label}: {args.tokens} tokens, rank {args.rank}: {seconds:.3f} s, loss {loss.item():.3f}")
        if rep > 0:
            times.append(seconds)
    times.sort()
    print(f"min {times[0]:.3f} s, median {times[len(times) // 2]:.3f} s, max {times[-1]:.3f} s over {args.reps} reps "
          f"(torch {torch.__version__}, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
