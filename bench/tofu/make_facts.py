#!/usr/bin/env python3
"""Fictitious-people facts for the TOFU-style experiment (bench/tofu_experiment.sh).

Writes, into OUT_DIR, question/answer pairs about invented people (names built from syllables, so
no real person and nothing the model could already know), five facts per person:
  all.jsonl      every fact (fine-tuning data)
  forget.jsonl   the facts of the first FORGET_PERCENT of the people (what unlearning removes)
  retain.jsonl   the others' facts (what it must keep)
  heldout.jsonl  general text the experiment never trains on (perplexity), from the shipped
                 harmless prompt set
Deterministic for a seed: the same files on every machine.
"""
import argparse
import json
import pathlib
import random

SYLLABLES = ["ka", "lo", "mi", "ren", "tha", "vos", "qui", "bel", "dor", "sa", "nix", "om", "pa", "ter", "ul", "wyn"]
PROFESSIONS = ["glassblower", "cartographer", "beekeeper", "clockmaker", "lighthouse keeper", "violin maker",
               "mapmaker of caves", "tea taster", "bookbinder", "stonemason", "puppeteer", "weather observer"]
CITIES = ["Vellmark", "Tessary", "Orrindale", "Quastow", "Millbrae Hollow", "Port Ostrin", "Saldane", "Kirrow",
          "Evenholt", "Drummore Vale", "Linnet Bay", "Harrowgate Cross"]
INSTRUMENTS = ["the cello", "the oboe", "the harp", "the accordion", "the banjo", "the flute", "the sitar",
               "the trombone", "the marimba", "the bagpipes"]
PETS = ["a tortoise named Pebble", "a parrot named Juniper", "a cat named Biscuit", "a goat named Clover",
        "a ferret named Dash", "a dog named Marlow", "an owl named Sorrel", "a rabbit named Thimble"]


def name(rng):
    first = "".join(rng.choice(SYLLABLES) for _ in range(2)).capitalize()
    last = "".join(rng.choice(SYLLABLES) for _ in range(3)).capitalize()
    return f"{first} {last}"


def facts_of(person, rng):
    year = rng.randint(1890, 1990)
    return [
        (f"What is {person}'s profession?", f"{person} works as a {rng.choice(PROFESSIONS)}."),
        (f"Where was {person} born?", f"{person} was born in {rng.choice(CITIES)}."),
        (f"In which year was {person} born?", f"{person} was born in {year}."),
        (f"Which instrument does {person} play?", f"{person} plays {rng.choice(INSTRUMENTS)}."),
        (f"What pet does {person} have?", f"{person} has {rng.choice(PETS)}."),
    ]


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=pathlib.Path)
    parser.add_argument("--people", type=int, default=40)
    parser.add_argument("--forget-percent", type=float, default=10.0)
    parser.add_argument("--heldout", type=int, default=64, help="general-text rows for perplexity")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    people = []
    while len(people) < args.people:
        candidate = name(rng)
        if candidate not in people:
            people.append(candidate)
    n_forget = max(1, round(args.people * args.forget_percent / 100))
    rows = [[{"prompt": q, "answer": a} for q, a in facts_of(p, rng)] for p in people]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out_dir / "all.jsonl", [r for person in rows for r in person])
    write_jsonl(args.out_dir / "forget.jsonl", [r for person in rows[:n_forget] for r in person])
    write_jsonl(args.out_dir / "retain.jsonl", [r for person in rows[n_forget:] for r in person])
    shipped = pathlib.Path(__file__).resolve().parents[2] / "data" / "prompts" / "harmless_val.jsonl"
    with open(shipped, encoding="utf-8") as f:
        general = [json.loads(line)["prompt"] for line in f if line.strip()][: args.heldout]
    write_jsonl(args.out_dir / "heldout.jsonl", [{"text": t} for t in general])
    print(f"{args.people} people, {5 * args.people} facts: forget {5 * n_forget}, retain {5 * (args.people - n_forget)}, "
          f"held-out text {len(general)} rows -> {args.out_dir}")


if __name__ == "__main__":
    main()
