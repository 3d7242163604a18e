// Running an unlearning study: every arm × seed, each trained (or built) on the [train] sets from
// the study's model and evaluated on every held-out set, one result at a time appended to a
// journal (OUT/journal.jsonl) so that an interrupted study resumes where it stopped. An arm that
// fails is recorded with its error and the study goes on; nothing of one run is kept in memory
// after its result is written (each trained arm's adapter goes to OUT/adapters/, and its
// evaluation loads the model with it merged, then drops it). Arms whose method does not depend on
// the seed (none, projection, sae) run for the first seed only; the other seeds get a copy of that
// result, marked "same_as_seed" in its train field.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "study/config.hpp"

namespace lathe::study {

// One held-out set's scores for one arm and seed, per example in the set's order.
struct SetResult {
  std::vector<double> probability;  // exp(mean log p) of the scored tokens (TOFU's answer probability)
  std::vector<double> logprob;      // sum of log p over the scored tokens
  std::vector<uint32_t> correct;    // scored tokens that are the greedy pick
  std::vector<uint32_t> scored;     // scored tokens
  // Over the set, as `lathe score` reports them.
  double mean_probability() const;
  double token_accuracy() const;
  double exact_match() const;
  double perplexity() const;
};

struct RunResult {
  std::string arm;
  uint64_t seed = 0;
  bool ok = false;
  std::string error;   // when !ok: what failed
  double seconds = 0;  // training + evaluation
  std::map<std::string, SetResult> sets;  // by eval set name
  nlohmann::json train;                    // what the arm's training reported (steps, last losses)
};

nlohmann::json to_json(const RunResult& result);
RunResult run_result_from_json(const nlohmann::json& line, const std::string& where);

struct RunOptions {
  std::filesystem::path out;  // the study's directory (created)
  bool restart = false;       // start a new journal even if one of this study exists
  int n_threads = 0;
  // Progress and messages for the user (one line each, no newline).
  std::function<void(const std::string&)> log;
  const std::atomic<bool>* stop = nullptr;  // checked between runs and training steps
};

// Runs what the journal does not hold yet, in arm-major order, and returns every result (resumed
// ones included) in the configuration's order. InvalidArgumentError when OUT holds the journal of
// another study (naming what differs) and restart is off; each run's own failures are results.
std::vector<RunResult> run_study(const StudyConfig& config, const RunOptions& options);

}  // namespace lathe::study
