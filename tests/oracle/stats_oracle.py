"""Oracle for lathe's statistics room (src/stats/): scipy and statsmodels compute the same numbers.

Usage: stats_oracle.py COMMAND INPUT.json   (prints JSON to stdout)
  normal     {"p": [...], "x": [...]}          -> {"ppf": [...], "cdf": [...]}  (scipy.stats.norm)
  mcnemar    {"tables": [[b, c], ...]}          -> {"p": [...]}  (statsmodels mcnemar, exact=True)
  bca_formula {"cases": [{"data": [...], "bootstrap": [...], "confidence": c}, ...]}
      -> per case, the BCa interval of the mean from that bootstrap distribution, twice:
         "scipy": scipy.stats._resampling._bca_interval (scipy 1.17.1's private helper, the code
                  scipy.stats.bootstrap runs) + scipy.stats.quantile (method 'linear');
         "formula": Efron & Tibshirani (1993) eq. 14.10-14.15 written out here in numpy.
  bootstrap  {"cases": [{"data": [...], "paired_with": [...]?, "confidence": c, "n_resamples": B, "seed": s}]}
      -> scipy.stats.bootstrap(method='BCa') interval and standard error (its own resampling).
"""
import json
import sys

import numpy as np
import scipy
import scipy.stats as st
from scipy.special import ndtr, ndtri
from scipy.stats import _resampling
from statsmodels.stats.contingency_tables import mcnemar


def normal(inp):
    return {"ppf": [float(v) for v in st.norm.ppf(np.array(inp["p"], dtype=np.float64))],
            "cdf": [float(v) for v in st.norm.cdf(np.array(inp["x"], dtype=np.float64))]}


def mcnemar_p(inp):
    out = []
    for b, c in inp["tables"]:
        # The diagonal does not enter the exact test; any counts do.
        out.append(float(mcnemar([[3, b], [c, 5]], exact=True).pvalue))
    return {"p": out}


def bca_scipy(data, boot, confidence):
    alpha = (1 - confidence) / 2
    stat = lambda x, axis=-1: np.mean(x, axis=axis)
    a1, a2, a_hat = _resampling._bca_interval((data,), stat, axis=-1, alpha=alpha, theta_hat_b=boot,
                                              batch=None, xp=np)
    lo, hi = st.quantile(boot, np.array([a1, a2]), method="linear")
    return {"low": float(lo), "high": float(hi), "acceleration": float(a_hat)}


def bca_formula(data, boot, confidence):
    n = len(data)
    theta = np.mean(data)
    z0 = ndtri((np.sum(boot < theta) + np.sum(boot <= theta)) / (2.0 * len(boot)))
    jack = np.array([np.mean(np.delete(data, i)) for i in range(n)])
    u = (n - 1) * (jack.mean() - jack)
    a = np.sum(u ** 3) / n ** 3 / (6 * (np.sum(u ** 2) / n ** 2) ** 1.5)
    z = ndtri((1 - confidence) / 2)
    levels = [ndtr(z0 + (z0 + zz) / (1 - a * (z0 + zz))) for zz in (z, -z)]
    lo, hi = np.quantile(np.sort(boot), levels, method="linear")
    return {"low": float(lo), "high": float(hi), "z0": float(z0), "acceleration": float(a)}


def bca_formulas(inp):
    out = []
    for case in inp["cases"]:
        data = np.array(case["data"], dtype=np.float64)
        boot = np.array(case["bootstrap"], dtype=np.float64)
        out.append({"scipy": bca_scipy(data, boot, case["confidence"]),
                    "formula": bca_formula(data, boot, case["confidence"])})
    return {"cases": out, "scipy_version": scipy.__version__}


def bootstrap(inp):
    out = []
    for case in inp["cases"]:
        rng = np.random.default_rng(case["seed"])
        data = np.array(case["data"], dtype=np.float64)
        kw = dict(confidence_level=case["confidence"], n_resamples=case["n_resamples"], method="BCa", rng=rng)
        if "paired_with" in case:
            other = np.array(case["paired_with"], dtype=np.float64)
            res = st.bootstrap((data, other), lambda x, y, axis=-1: np.mean(x - y, axis=axis), paired=True, **kw)
        else:
            res = st.bootstrap((data,), lambda x, axis=-1: np.mean(x, axis=axis), **kw)
        out.append({"low": float(res.confidence_interval.low), "high": float(res.confidence_interval.high),
                    "standard_error": float(res.standard_error)})
    return {"cases": out}


def main():
    command, path = sys.argv[1], sys.argv[2]
    with open(path) as f:
        inp = json.load(f)
    handlers = {"normal": normal, "mcnemar": mcnemar_p, "bca_formula": bca_formulas, "bootstrap": bootstrap}
    json.dump(handlers[command](inp), sys.stdout)


if __name__ == "__main__":
    main()
