// A study's configuration and results made up in memory (no model): arms of every kind of
// outcome, for the report's tests and its check against scipy/statsmodels.
#pragma once

#include <random>
#include <string>
#include <vector>

#include "study/config.hpp"
#include "study/runner.hpp"

namespace lathe::study::test {

inline StudyConfig made_up_config(bool with_retain = true) {
  StudyConfig c;
  c.file = "made-up.toml";
  c.model = "model.gguf";
  c.seeds = {1, 2, 3};
  c.resamples = 9999;
  c.evals = {{"forget", "f.jsonl", EvalKind::Forget, "en"}, {"forget-es", "fes.jsonl", EvalKind::Forget, "es"}};
  if (with_retain) c.evals.push_back({"retain", "r.jsonl", EvalKind::Retain, "en"});
  c.evals.push_back({"general", "g.jsonl", EvalKind::General, ""});
  for (const auto& [name, method] : std::vector<std::pair<std::string, ArmMethod>>{
           {"base", ArmMethod::None}, {"npo", ArmMethod::Unlearn}, {"proj", ArmMethod::Projection}, {"broken", ArmMethod::Unlearn}}) {
    ArmConfig arm;
    arm.name = name;
    arm.method = method;
    arm.source = {{"name", name}};
    c.arms.push_back(arm);
  }
  c.baseline = "base";
  return c;
}

// base: the same scores for every seed; npo: lower forget probabilities, varying by seed; proj:
// equal to base on the general set (an "identical" comparison); broken: failed on every seed.
inline std::vector<RunResult> made_up_results(const StudyConfig& c) {
  std::vector<RunResult> out;
  std::mt19937_64 rng(42);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const size_t n = 12;
  std::vector<double> base_prob(n);
  for (double& p : base_prob) p = 0.6 + 0.35 * u(rng);
  for (const auto& arm : c.arms)
    for (const uint64_t seed : c.seeds) {
      RunResult r;
      r.arm = arm.name;
      r.seed = seed;
      if (arm.name == "broken") {
        r.ok = false;
        r.error = "out of luck | seed " + std::to_string(seed);
        out.push_back(r);
        continue;
      }
      r.ok = true;
      for (const auto& set : c.evals) {
        SetResult s;
        for (size_t i = 0; i < n; ++i) {
          double p = base_prob[i];
          if (arm.name == "npo" && set.kind == EvalKind::Forget) p *= 0.3 + 0.2 * u(rng);
          if (arm.name == "npo" && set.kind != EvalKind::Forget) p *= 0.9 + 0.1 * u(rng);
          if (arm.name == "proj" && set.kind != EvalKind::General) p *= 0.5 + 0.5 * u(rng);
          const uint32_t scored = 4 + static_cast<uint32_t>(i % 3);
          s.probability.push_back(p);
          s.logprob.push_back(std::log(p) * scored);
          s.scored.push_back(scored);
          s.correct.push_back(p > 0.7 ? scored : scored / 2);
        }
        r.sets[set.name] = s;
      }
      out.push_back(r);
    }
  return out;
}

}  // namespace lathe::study::test
