#!/usr/bin/env python3
"""Reference tokenization with Hugging Face `tokenizers`, for tests/tokenizer.

usage: tokenize_oracle.py (--tokenizer-json PATH | --gguf PATH) INPUT.json OUTPUT.json

INPUT.json is a JSON list of hex strings (the raw bytes of each test text; invalid UTF-8 is
decoded with errors="replace", lathe's documented policy). OUTPUT.json gets one object per text:
  ids       encode(text, add_special_tokens=False).ids      (added tokens matched)
  tokens    the token strings of `ids` (Encoding.tokens)
  ids_special  encode(text, add_special_tokens=True).ids    (BOS/EOS from the post-processor)
  ids_text  the same with encode_special_tokens=True        (special tokens encoded as text)
  decoded   decode(ids_text, skip_special_tokens=False)
  nfc       unicodedata NFC of the text
For --gguf, an equivalent HF tokenizer is built from the tokenizer.ggml.* metadata (read with
gguf-py), mapping tokenizer.ggml.pre the way llama.cpp does.
"""
import argparse
import json
import sys
import unicodedata

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"


def tokenizer_from_gguf(path):
    from gguf import GGUFReader

    reader = GGUFReader(path)

    def value(key, default=None):
        field = reader.fields.get(key)
        return default if field is None else field.contents()

    model = value("tokenizer.ggml.model")
    if model != "gpt2":
        sys.exit(f"{path}: tokenizer.ggml.model {model!r} is not supported by this oracle")
    pre = value("tokenizer.ggml.pre", "default")
    tokens = value("tokenizer.ggml.tokens")
    types = value("tokenizer.ggml.token_type", [1] * len(tokens))
    merges = [tuple(m.split(" ")) for m in value("tokenizer.ggml.merges")]
    vocab = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)  # first occurrence wins, as in lathe
    steps = []
    if pre in ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"):
        steps.append(pre_tokenizers.Digits(individual_digits=True))
    elif pre not in ("default", "gpt2", "mpt", "olmo", "jais"):
        sys.exit(f"{path}: tokenizer.ggml.pre {pre!r} is not supported by this oracle")
    steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True))
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tk.pre_tokenizer = pre_tokenizers.Sequence(steps)
    tk.decoder = decoders.ByteLevel()
    added = [AddedToken(tokens[i], special=(t == 3), normalized=False) for i, t in enumerate(types) if t in (3, 4)]
    tk.add_special_tokens([a for a in added if a.special])
    tk.add_tokens([a for a in added if not a.special])
    return tk


def main():
    parser = argparse.ArgumentParser()
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--tokenizer-json")
    source.add_argument("--gguf")
    parser.add_argument("input")
    parser.add_argument("output")
    args = parser.parse_args()

    tk = Tokenizer.from_file(args.tokenizer_json) if args.tokenizer_json else tokenizer_from_gguf(args.gguf)
    with open(args.input, encoding="utf-8") as f:
        texts = [bytes.fromhex(h).decode("utf-8", errors="replace") for h in json.load(f)]

    encodings = tk.encode_batch(texts, add_special_tokens=False)
    ids = [e.ids for e in encodings]
    tokens = [e.tokens for e in encodings]
    ids_special = [e.ids for e in tk.encode_batch(texts, add_special_tokens=True)]
    tk.encode_special_tokens = True
    ids_text = [e.ids for e in tk.encode_batch(texts, add_special_tokens=False)]
    decoded = tk.decode_batch(ids_text, skip_special_tokens=False)
    results = [
        {"ids": a, "ids_text": b, "decoded": d, "nfc": unicodedata.normalize("NFC", t), "tokens": p, "ids_special": s}
        for a, b, d, t, p, s in zip(ids, ids_text, decoded, texts, tokens, ids_special)
    ]
    with open(args.output, "w", encoding="utf-8") as f:
        json.dump(results, f, ensure_ascii=True)


if __name__ == "__main__":
    main()
