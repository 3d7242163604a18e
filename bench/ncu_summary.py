"""Summarizes an Nsight Compute CSV (ncu --metrics gpu__time_duration.sum --csv) of lathe's CUDA
kernels: GPU time per forward pass by kernel, normalized by the number of passes (counted by the
embedding kernel, which runs once per pass). Usage: ncu_summary.py FILE.csv [--label TEXT]"""
import argparse
import collections
import csv
import re


def short(name):
    for noise in ("(anonymous namespace)::", "<unnamed>::", "lathe::cuda::", "void "):
        name = name.replace(noise, "")
    name = re.sub(r"\([\w:]+\)(?=-?\d)", "", name)  # template arguments cast to enums: (lathe::DType)2
    name = re.sub(r"\(.*", "", name)                # drop parameter lists
    return name


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    rows = []
    with open(args.csv, newline="") as f:
        lines = [l for l in f if l.startswith('"')]
    for r in csv.DictReader(lines):
        if r.get("Metric Name") == "gpu__time_duration.sum":
            rows.append((r["Kernel Name"], float(r["Metric Value"].replace(",", ""))))
    total = collections.defaultdict(float)
    count = collections.Counter()
    for name, ns in rows:
        total[short(name)] += ns
        count[short(name)] += 1
    passes = max(1, sum(c for n, c in count.items() if "embed_kernel" in n))
    all_ns = sum(total.values())
    print(f"{args.label}: {len(rows)} kernels over {passes} forward passes; GPU time per pass {all_ns / passes / 1e3:.1f} us, "
          f"{len(rows) / passes:.0f} kernels per pass")
    for name, ns in sorted(total.items(), key=lambda kv: -kv[1])[:14]:
        print(f"  {ns / passes / 1e3:9.1f} us/pass  {count[name] / passes:6.1f} x  {ns / count[name] / 1e3:8.2f} us each  {name[:90]}")


if __name__ == "__main__":
    main()
