#!/usr/bin/env python3
"""Tokenizer encode throughput: lathe vs HF `tokenizers`, single-threaded, in the same run.

usage: tokenize_bench.py --bench BUILD/lathe_bench_tokenize --tokenizer DIR_OR_FILE [--mb 10] [--out result.json]

Generates a deterministic mixed corpus (English-like prose, code, numbers, CJK, Cyrillic, emoji;
seed 1234) of about --mb megabytes, then measures encode MB/s for
  lathe           (lines one at a time, best of 3)
  hf_lines        tokenizers Tokenizer.encode per line (TOKENIZERS_PARALLELISM=false)
  hf_batch        tokenizers encode_batch of all lines with 1 thread
and writes the numbers as JSON.
"""
import os

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"

import argparse, json, platform, random, subprocess, tempfile, time  # noqa: E401,E402

from tokenizers import Tokenizer  # noqa: E402


def make_corpus(megabytes, seed=1234):
    rng = random.Random(seed)
    words = ("the of and to in is that for it as with was on be by this are from or have an they which one you "
             "were her all she there would their we him been has when who will more no if out so said what up its "
             "about into than them can only other new some could time these two may then do first any my now such "
             "like our over man me even most made after also did many before must through back years where much "
             "your way well down should because each just those people how too little state good very make world "
             "still own see men work long get here between both life being under never day same another know "
             "while last might us great old year off come since against go came right used take three").split()
    code = ["def f(x):\n    return x * 2\n", "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
            "if err != nil {\n\treturn err\n}", "SELECT id, name FROM users WHERE age > 30;", "x = [1, 2, 3]"]
    foreign = ["日本語のテキストです。", "中文文本测试，标点符号！", "Привет, как дела? Всё хорошо.", "नमस्ते दुनिया",
               "한국어 텍스트", "😀 👍🏽 👨‍👩‍👧‍👦 🇫🇷", "naïve café résumé", "Ελληνικά κείμενα"]
    target = int(megabytes * 1e6)
    lines, size = [], 0
    while size < target:
        kind = rng.random()
        if kind < 0.7:
            n = rng.randint(3, 30)
            line = " ".join(rng.choice(words) for _ in range(n))
            line = line.capitalize() + rng.choice([".", "!", "?", ",", " it's", " they'll"]) + " " + str(rng.randint(0, 10**rng.randint(1, 8)))
        elif kind < 0.85:
            line = rng.choice(code)
        else:
            line = " ".join(rng.choice(foreign) for _ in range(rng.randint(1, 4)))
        lines.append(line + "\n")
        size += len(line.encode()) + 1
    return "".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--mb", type=float, default=10.0)
    ap.add_argument("--out", default="tokenize_bench.json")
    args = ap.parse_args()

    text = make_corpus(args.mb)
    data = text.encode()
    lines = text.splitlines(keepends=True)
    with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as f:
        f.write(data)
        corpus_path = f.name
    try:
        lathe = json.loads(subprocess.run([args.bench, args.tokenizer, corpus_path, "3"], check=True,
                                          capture_output=True, text=True).stdout)
    finally:
        os.unlink(corpus_path)

    path = args.tokenizer
    if os.path.isdir(path):
        path = os.path.join(path, "tokenizer.json")
    tk = Tokenizer.from_file(path)
    start = time.perf_counter()
    hf_tokens = sum(len(tk.encode(line, add_special_tokens=False).ids) for line in lines)
    hf_lines_s = time.perf_counter() - start
    start = time.perf_counter()
    batch = tk.encode_batch(lines, add_special_tokens=False)
    hf_batch_s = time.perf_counter() - start
    mb = len(data) / 1e6
    result = {
        "tokenizer": args.tokenizer, "corpus_bytes": len(data), "lines": len(lines),
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "lathe_mb_per_s": lathe["mb_per_s"], "lathe_tokens": lathe["tokens"],
        "hf_lines_mb_per_s": mb / hf_lines_s, "hf_batch_1thread_mb_per_s": mb / hf_batch_s,
        "hf_tokens": hf_tokens, "tokens_equal": hf_tokens == lathe["tokens"] == sum(len(e.ids) for e in batch),
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
