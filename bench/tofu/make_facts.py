#!/usr/bin/env python3
"""Fictitious-people facts for the TOFU-style experiment (bench/tofu_experiment.sh).

Writes, into OUT_DIR, question/answer pairs about invented people (names built from syllables, so
no real person and nothing the model could already know), five facts per person:
  all.jsonl      every fact (fine-tuning data)
  forget.jsonl   the facts of the first FORGET_PERCENT of the people (what unlearning removes)
  retain.jsonl   the others' facts (what it must keep)
  heldout.jsonl  general text the experiment never trains on (perplexity), from the shipped
                 harmless prompt set
  forget_es.jsonl, retain_es.jsonl  the same facts asked and answered in Spanish (names, cities and
                 years unchanged; professions, instruments and pets translated), never trained on:
                 whether unlearning in English also removes the fact in another language
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


# Spanish renderings of the facts (the values the English facts draw, translated).
PROFESSIONS_ES = dict(zip(PROFESSIONS, ["soplador de vidrio", "cartógrafo", "apicultor", "relojero", "farero",
                                        "lutier de violines", "cartógrafo de cuevas", "catador de té", "encuadernador",
                                        "cantero", "titiritero", "observador del tiempo"]))
INSTRUMENTS_ES = dict(zip(INSTRUMENTS, ["el violonchelo", "el oboe", "el arpa", "el acordeón", "el banjo", "la flauta",
                                        "el sitar", "el trombón", "la marimba", "la gaita"]))
PETS_ES = dict(zip(PETS, ["una tortuga llamada Pebble", "un loro llamado Juniper", "un gato llamado Biscuit",
                          "una cabra llamada Clover", "un hurón llamado Dash", "un perro llamado Marlow",
                          "un búho llamado Sorrel", "un conejo llamado Thimble"]))


def name(rng):
    first = "".join(rng.choice(SYLLABLES) for _ in range(2)).capitalize()
    last = "".join(rng.choice(SYLLABLES) for _ in range(3)).capitalize()
    return f"{first} {last}"


def facts_of(person, rng):
    """Five (question, answer, spanish question, spanish answer) facts of a person."""
    year = rng.randint(1890, 1990)
    profession, city = rng.choice(PROFESSIONS), rng.choice(CITIES)
    instrument, pet = rng.choice(INSTRUMENTS), rng.choice(PETS)
    return [
        (f"What is {person}'s profession?", f"{person} works as a {profession}.",
         f"¿Cuál es la profesión de {person}?", f"{person} trabaja como {PROFESSIONS_ES[profession]}."),
        (f"Where was {person} born?", f"{person} was born in {city}.",
         f"¿Dónde nació {person}?", f"{person} nació en {city}."),
        (f"In which year was {person} born?", f"{person} was born in {year}.",
         f"¿En qué año nació {person}?", f"{person} nació en {year}."),
        (f"Which instrument does {person} play?", f"{person} plays {instrument}.",
         f"¿Qué instrumento toca {person}?", f"{person} toca {INSTRUMENTS_ES[instrument]}."),
        (f"What pet does {person} have?", f"{person} has {pet}.",
         f"¿Qué mascota tiene {person}?", f"{person} tiene {PETS_ES[pet]}."),
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
    facts = [facts_of(p, rng) for p in people]
    rows = [[{"prompt": q, "answer": a} for q, a, _, _ in person] for person in facts]
    rows_es = [[{"prompt": q, "answer": a} for _, _, q, a in person] for person in facts]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out_dir / "all.jsonl", [r for person in rows for r in person])
    write_jsonl(args.out_dir / "forget.jsonl", [r for person in rows[:n_forget] for r in person])
    write_jsonl(args.out_dir / "retain.jsonl", [r for person in rows[n_forget:] for r in person])
    write_jsonl(args.out_dir / "forget_es.jsonl", [r for person in rows_es[:n_forget] for r in person])
    write_jsonl(args.out_dir / "retain_es.jsonl", [r for person in rows_es[n_forget:] for r in person])
    shipped = pathlib.Path(__file__).resolve().parents[2] / "data" / "prompts" / "harmless_val.jsonl"
    with open(shipped, encoding="utf-8") as f:
        general = [json.loads(line)["prompt"] for line in f if line.strip()][: args.heldout]
    write_jsonl(args.out_dir / "heldout.jsonl", [{"text": t} for t in general])
    print(f"{args.people} people, {5 * args.people} facts: forget {5 * n_forget}, retain {5 * (args.people - n_forget)}, "
          f"held-out text {len(general)} rows -> {args.out_dir}")


if __name__ == "__main__":
    main()
