"""Oracle for lathe's statistics room (src/stats/): scipy and statsmodels compute the same numbers.

Usage: stats_oracle.py COMMAND INPUT.json   (prints JSON to stdout)
  normal     {"p": [...], "x": [...]}          -> {"ppf": [...], "cdf": [...]}  (scipy.stats.norm)
  mcnemar    {"tables": [[b, c], ...]}          -> {"p": [...]}  (statsmodels mcnemar, exact=True)
  bca_formula {"cases": [{"data": [...], "bootstrap": [...], "confidence": c}, ...]}
      -> per case, the BCa interval of the mean from that bootstrap distribution, twice:
         "scipy": scipy.stats._resampling._bca_interval (scipy 1.17.1's private helper, the code
                  scipy.stats.bootstrap runs) + scipy.stats.quantile (method 'linear');
         "formula": Efron & Tibshirani (1993) eq. 14.10-14.15 written out here in numpy.
  bootstrap  {"cases": [{"data": [...], "paired_with": [...]? | "two_sample_with": [...]?, "statistic": "mean"|"median"?,
                         "method": "BCa"|"percentile"?, "confidence": c, "n_resamples": B, "seed": s}]}
      -> scipy.stats.bootstrap interval and standard error (its own resampling).
  bootstrap_given  {"cases": [{...as bootstrap, "distribution": [...]}]}
      -> scipy.stats.bootstrap(n_resamples=0, bootstrap_result=<that distribution>): scipy's interval
         (its own jackknife, z0, acceleration, quantiles) from lathe's bootstrap distribution.
  fisher     {"tables": [[a, b, c, d], ...]}   -> per table and alternative: scipy.stats.fisher_exact
  wilcoxon   {"cases": [{"d": [...], "alternative": a}]} -> scipy.stats.wilcoxon(d) (defaults otherwise)
  permutation {"cases": [{"design": "sign_flip"|"two_sample", "x": [...], "y": [...]?, "alternative": a,
                          "n_resamples": N | null (= inf: always exact)}]}
      -> scipy.stats.permutation_test of the mean (sign flips: permutation_type='samples' on x) or of
         mean(x) - mean(y) (permutation_type='independent'): statistic, p-value, whether exact.
  fdr        {"cases": [{"p": [...], "method": "fdr_bh"|"fdr_by", "alpha": a}]}
      -> statsmodels.stats.multitest.multipletests: adjusted p-values and reject flags.
Non-finite results are written as null (JSON has no NaN).
"""
import json
import sys

import numpy as np
import scipy
import scipy.stats as st
from scipy.special import ndtr, ndtri
from scipy.stats import _resampling
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests


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


STATISTICS = {"mean": np.mean, "median": np.median}


def bootstrap_call(case, **kw):
    """scipy.stats.bootstrap for one case: one sample, paired (statistic of x - y) or two samples."""
    f = STATISTICS[case.get("statistic", "mean")]
    data = np.array(case["data"], dtype=np.float64)
    kw = dict(confidence_level=case["confidence"], method=case.get("method", "BCa"), **kw)
    if "paired_with" in case:
        other = np.array(case["paired_with"], dtype=np.float64)
        return st.bootstrap((data, other), lambda x, y, axis=-1: f(x - y, axis=axis), paired=True, **kw)
    if "two_sample_with" in case:
        other = np.array(case["two_sample_with"], dtype=np.float64)
        return st.bootstrap((data, other), lambda x, y, axis=-1: f(x, axis=axis) - f(y, axis=axis), **kw)
    return st.bootstrap((data,), lambda x, axis=-1: f(x, axis=axis), **kw)


def finite(v):
    v = float(v)
    return v if np.isfinite(v) else None


def bootstrap(inp):
    out = []
    for case in inp["cases"]:
        res = bootstrap_call(case, n_resamples=case["n_resamples"], rng=np.random.default_rng(case["seed"]))
        out.append({"low": float(res.confidence_interval.low), "high": float(res.confidence_interval.high),
                    "standard_error": float(res.standard_error)})
    return {"cases": out}


def bootstrap_given(inp):
    import types
    import warnings
    out = []
    for case in inp["cases"]:
        given = types.SimpleNamespace(bootstrap_distribution=np.array(case["distribution"], dtype=np.float64))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DegenerateDataWarning: the NaN is the answer checked
            res = bootstrap_call(case, n_resamples=0, bootstrap_result=given)
        out.append({"low": finite(res.confidence_interval.low), "high": finite(res.confidence_interval.high),
                    "standard_error": finite(res.standard_error)})
    return {"cases": out, "scipy_version": scipy.__version__}


def fisher(inp):
    out = []
    for a, b, c, d in inp["tables"]:
        row = {}
        for alternative in ("two-sided", "less", "greater"):
            res = st.fisher_exact([[a, b], [c, d]], alternative=alternative)
            row[alternative] = float(res.pvalue)
        odds = float(res.statistic)
        row["odds_ratio"] = "nan" if np.isnan(odds) else ("inf" if np.isinf(odds) else odds)
        out.append(row)
    return {"tables": out}


def wilcoxon(inp):
    import warnings
    out = []
    for case in inp["cases"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                res = st.wilcoxon(np.array(case["d"], dtype=np.float64), alternative=case["alternative"])
                out.append({"statistic": finite(res.statistic), "p": finite(res.pvalue)})
            except ValueError as e:
                out.append({"error": str(e)})
    return {"cases": out}


def mean_statistic(x, axis=-1):
    return np.mean(x, axis=axis)


def mean_difference(x, y, axis=-1):
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def permutation(inp):
    out = []
    for case in inp["cases"]:
        n = case["n_resamples"]
        kw = dict(alternative=case["alternative"], n_resamples=np.inf if n is None else n,
                  rng=np.random.default_rng(case.get("seed", 0)))
        x = np.array(case["x"], dtype=np.float64)
        if case["design"] == "sign_flip":
            res = st.permutation_test((x,), mean_statistic, permutation_type="samples", **kw)
            m = 2 ** len(x)
        else:
            y = np.array(case["y"], dtype=np.float64)
            res = st.permutation_test((x, y), mean_difference, permutation_type="independent", **kw)
            m = scipy.special.comb(len(x) + len(y), len(x), exact=True)
        out.append({"statistic": float(res.statistic), "p": float(res.pvalue),
                    "exact": bool(n is None or n >= m), "n_null": int(res.null_distribution.size)})
    return {"cases": out}


def fdr(inp):
    out = []
    for case in inp["cases"]:
        reject, adjusted, _, _ = multipletests(np.array(case["p"], dtype=np.float64), alpha=case["alpha"],
                                               method=case["method"])
        out.append({"adjusted": [float(v) for v in adjusted], "reject": [bool(v) for v in reject]})
    return {"cases": out}


def main():
    command, path = sys.argv[1], sys.argv[2]
    with open(path) as f:
        inp = json.load(f)
    handlers = {"normal": normal, "mcnemar": mcnemar_p, "bca_formula": bca_formulas, "bootstrap": bootstrap,
                "bootstrap_given": bootstrap_given, "fisher": fisher, "wilcoxon": wilcoxon,
                "permutation": permutation, "fdr": fdr}
    json.dump(handlers[command](inp), sys.stdout)


if __name__ == "__main__":
    main()
