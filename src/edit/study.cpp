#include "edit/study.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fmt/format.h>
#include <ostream>

#include "api/model_impl.hpp"
#include "edit/ablation_adapter.hpp"
#include "edit/progress.hpp"
#include "weights/device_sync.hpp"

namespace lathe::edit {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string key(EditComponent c, std::string_view field) { return fmt::format("{}.{}", component_name(c), field); }

double at(const std::map<std::string, double>& point, const std::string& name) {
  const auto it = point.find(name);
  if (it == point.end())
    throw InvalidArgumentError(fmt::format("ablation parameters lack '{}' (a journal from another space?)", name));
  return it->second;
}

std::vector<std::vector<TokenId>> tokenize_for_eval(const Model& model, const std::vector<std::string>& prompts,
                                                    const ChatPromptOptions& chat, uint32_t max_tokens,
                                                    std::string_view set, std::ostream& log) {
  std::vector<std::vector<TokenId>> out;
  size_t skipped = 0;
  for (const auto& p : prompts) {
    auto tokens = chat_prompt_tokens(model, p, chat);
    if (tokens.empty() || tokens.size() > max_tokens) {
      ++skipped;
      continue;
    }
    out.push_back(std::move(tokens));
  }
  if (skipped > 0)
    log << fmt::format("{}: skipped {} prompt(s) that are empty or longer than {} tokens\n", set, skipped, max_tokens);
  if (out.empty())
    throw InvalidArgumentError(fmt::format("{}: every prompt is longer than {} tokens; use shorter prompts", set, max_tokens));
  return out;
}

}  // namespace

std::vector<ParamSpec> ablation_space(uint32_t n_layer, bool per_layer_directions,
                                      const std::vector<EditComponent>& components) {
  if (n_layer < 2) throw UnsupportedError("abliteration needs a model with at least 2 layers");
  const double last = n_layer - 1.0;
  std::vector<ParamSpec> space;
  if (!per_layer_directions) space.push_back({"direction_index", 0.4 * last, 0.9 * last});
  for (EditComponent c : components) {
    space.push_back({key(c, "max_weight"), 0.8, 1.5});
    space.push_back({key(c, "max_weight_position"), 0.6 * last, last});
    space.push_back({key(c, "min_weight_frac"), 0.0, 1.0});
    space.push_back({key(c, "min_weight_distance"), 1.0, std::max(1.5, 0.6 * last)});
  }
  return space;
}

AblationParams params_from_point(const std::map<std::string, double>& point, bool per_layer_directions,
                                 const std::vector<EditComponent>& components) {
  AblationParams p;
  p.direction_index = per_layer_directions ? -1.0 : at(point, "direction_index");
  for (EditComponent c : components) {
    ComponentParams k;
    k.max_weight = at(point, key(c, "max_weight"));
    k.max_weight_position = at(point, key(c, "max_weight_position"));
    k.min_weight = at(point, key(c, "min_weight_frac")) * k.max_weight;
    k.min_weight_distance = at(point, key(c, "min_weight_distance"));
    p.components[c] = k;
  }
  return p;
}

AblationStudy::AblationStudy(std::shared_ptr<Model> model, StudyOptions options, std::ostream& log, bool log_is_tty)
    : model_(std::move(model)), options_(std::move(options)), log_(log), log_is_tty_(log_is_tty) {
  if (!model_) throw InvalidArgumentError("AblationStudy needs a loaded model");
  if (options_.components.empty()) throw InvalidArgumentError("choose at least one component to edit");
}

AblationStudy::~AblationStudy() = default;

const RefusalDirections& AblationStudy::directions() const {
  if (!directions_) throw InvalidArgumentError("call prepare() first");
  return *directions_;
}

std::vector<ParamSpec> AblationStudy::space() const {
  return ablation_space(model_->summary().n_layer, options_.per_layer_directions, options_.components);
}

void AblationStudy::prepare() {
  auto& weights = internals(*model_).weights;
  const PromptFileOptions train{.limit = options_.train_limit};
  const auto harmful_train = read_prompts(options_.harmful_train, train);
  const auto harmless_train = read_prompts(options_.harmless_train, train);
  const auto harmful_val = read_prompts(options_.harmful_val, {.limit = options_.harmful_val_limit});
  const auto harmless_val = read_prompts(options_.harmless_val, {.limit = options_.harmless_val_limit});

  // 1. Directions.
  {
    ProgressBar bar("directions", harmful_train.size() + harmless_train.size(), log_, log_is_tty_);
    DirectionOptions d{.orthogonalize = options_.orthogonalize,
                       .chat = options_.chat,
                       .n_ctx = 0,
                       .compute = options_.compute,
                       .progress = [&](size_t done, size_t) { bar.update(done, "prefill"); }};
    directions_ = compute_refusal_directions(model_, harmful_train, harmless_train, d);
    bar.finish();
    const auto& r = *directions_;
    if (r.n_harmful_skipped + r.n_harmless_skipped > 0)
      log_ << fmt::format("directions: skipped {} harmful and {} harmless prompt(s) longer than the context\n",
                          r.n_harmful_skipped, r.n_harmless_skipped);
    size_t best = 0;
    for (size_t l = 1; l < r.separation.size(); ++l)
      if (r.separation[l] > r.separation[best]) best = l;
    log_ << fmt::format("directions: {} harmful / {} harmless prompts, {} layers; largest separation at layer {} "
                        "(|mean diff| {:.3f})\n",
                        r.n_harmful, r.n_harmless, r.n_layer, best, r.separation[best]);
  }

  // 2. Writable copies and the cache of the originals.
  make_editable(weights, options_.components);
  if (options_.cache_weights) {
    cache_ = WeightCache::build(weights, options_.components,
                                {.max_bytes = 0, .warn = [this](std::string_view m) { log_ << "warning: " << m << "\n"; }});
    log_ << cache_->summary(weights) << "\n";
  } else {
    log_ << "weight cache: off (--cache-weights false); each trial re-reads the edited matrices from the model file\n";
  }

  // 3. Validation sets and the unedited model's scores.
  const uint32_t n_ctx_train = model_->summary().n_ctx_train == 0 ? 4096 : model_->summary().n_ctx_train;
  const uint32_t max_prompt = n_ctx_train > uint32_t(options_.evaluation.max_new_tokens)
                                  ? n_ctx_train - options_.evaluation.max_new_tokens
                                  : 0;
  auto harmful = tokenize_for_eval(*model_, harmful_val, options_.chat, max_prompt, "harmful validation", log_);
  // The KL session uses TrialEvaluator's context, min(training context, 4096), which also holds the
  // kl_tokens - 1 continuation tokens after a prompt.
  const uint32_t kl_window = std::max<uint32_t>(1, std::min<uint32_t>(n_ctx_train, 4096));
  const uint32_t kl_context = kl_window - std::min(kl_window - 1, options_.evaluation.kl_tokens - 1);
  auto harmless = tokenize_for_eval(*model_, harmless_val, options_.chat, kl_context, "harmless validation", log_);
  const auto t0 = Clock::now();
  evaluator_ = std::make_unique<TrialEvaluator>(model_, std::move(harmful), std::move(harmless), options_.evaluation);
  const double kl_setup = since(t0);
  const auto t1 = Clock::now();
  baseline_ = evaluator_->refusals();
  log_ << fmt::format("baseline: refusals {}/{} ({:.1f}%) on the harmful validation set [{:.1f} s]; reference "
                      "distributions of {} harmless prompts [{:.1f} s]\n",
                      baseline_.refused, baseline_.total, 100.0 * baseline_.rate, since(t1), evaluator_->n_harmless(),
                      kl_setup);
}

void AblationStudy::restore(const std::vector<uint32_t>& layers) {
  if (layers.empty()) return;
  auto& weights = internals(*model_).weights;
  if (cache_)
    cache_->restore(weights, layers);
  else
    reload_from_file(layers);
  sync_device_copies(weights, layers, options_.components);
}

void AblationStudy::reload_from_file(const std::vector<uint32_t>& layers) {
  auto& weights = internals(*model_).weights;
  const auto fresh = load_model_weights(model_->summary().path);
  for (uint32_t layer : layers) {
    for (EditComponent c : options_.components) {
      const auto originals = component_matrices(fresh, layer, c);
      const auto targets = component_matrices(weights, layer, c);
      for (size_t i = 0; i < targets.size() && i < originals.size(); ++i) {
        auto bytes = writable_bytes(weights, *targets[i]);
        const size_t size = static_cast<size_t>(originals[i]->rows) * originals[i]->row_bytes;
        if (size != bytes.size())
          throw FormatError(fmt::format("{}: {} changed size on disk since loading; reload the model",
                                        model_->summary().path, targets[i]->name));
        std::memcpy(bytes.data(), originals[i]->data, size);
      }
    }
  }
}

void AblationStudy::reset_weights() {
  restore(dirty_layers_);
  dirty_layers_.clear();
}

TrialOutcome AblationStudy::run_trial(const AblationParams& params, bool evaluate) {
  if (!evaluator_) throw InvalidArgumentError("call prepare() before running trials");
  TrialOutcome out;
  auto t = Clock::now();
  reset_weights();
  out.timing.reset = since(t);
  t = Clock::now();
  out.edit = apply_ablation(internals(*model_).weights, *directions_, params, options_.norm_preserving);
  dirty_layers_ = out.edit.layers;
  sync_device_copies(internals(*model_).weights, dirty_layers_, options_.components);
  out.timing.edit = since(t);
  if (!evaluate) return out;
  t = Clock::now();
  out.refusals = evaluator_->refusals();
  out.timing.refusals = since(t);
  t = Clock::now();
  out.kl = evaluator_->kl_divergence();
  out.timing.kl = since(t);
  return out;
}

std::pair<double, double> AblationStudy::measure_restore(int repeats) {
  std::vector<uint32_t> all(model_->summary().n_layer);
  for (uint32_t l = 0; l < all.size(); ++l) all[l] = l;
  double cached = 0, reloaded = 0;
  for (int i = 0; i < repeats; ++i) {
    // Both include copying the restored matrices to the GPU when the model has a device copy.
    auto t = Clock::now();
    if (cache_) {
      cache_->restore(internals(*model_).weights, all);
      sync_device_copies(internals(*model_).weights, all, options_.components);
    }
    cached += since(t);
    t = Clock::now();
    reload_from_file(all);
    sync_device_copies(internals(*model_).weights, all, options_.components);
    reloaded += since(t);
  }
  dirty_layers_.clear();
  return {cache_ ? cached / repeats : -1.0, reloaded / repeats};
}

std::vector<Trial> AblationStudy::search(Journal& journal, const SearchOptions& o,
                                         const std::function<void(const Trial&, const TrialOutcome&)>& on_trial) {
  const auto space_now = space();
  MultiObjectiveTpe tpe(space_now, 2, {.seed = o.seed, .n_startup = o.n_startup});
  std::vector<Trial> trials = journal.trials();
  while (static_cast<int>(trials.size()) < o.n_trials) {
    Trial trial;
    trial.number = static_cast<int>(trials.size());
    trial.params = tpe.suggest(trials);
    const auto outcome =
        run_trial(params_from_point(trial.params, options_.per_layer_directions, options_.components));
    const auto& tm = outcome.timing;
    trial.values = {outcome.refusals.rate, outcome.kl};
    trial.seconds = tm.reset + tm.edit + tm.refusals + tm.kl;
    trial.extra = {{"refused", outcome.refusals.refused}, {"total", outcome.refusals.total},
                   {"reset_s", tm.reset}, {"edit_s", tm.edit}, {"refusals_s", tm.refusals}, {"kl_s", tm.kl},
                   {"edited_matrices", outcome.edit.n_matrices},
                   {"requantization_rel_rms", outcome.edit.requantization_rel_rms}};
    journal.append(trial);
    trials.push_back(trial);
    if (on_trial) on_trial(trials.back(), outcome);
  }
  return trials;
}

AblationStudy::TrialExport AblationStudy::export_trial(const Trial& trial, const std::filesystem::path& out,
                                                       const ExportOptions& options) {
  const auto outcome =
      run_trial(params_from_point(trial.params, options_.per_layer_directions, options_.components), /*evaluate=*/false);
  ExportOptions with_rms = options;
  with_rms.metadata.emplace_back("lathe.ablation.requantization_rel_rms",
                                 fmt::format("{:.6g}", outcome.edit.requantization_rel_rms));
  return {export_model(internals(*model_).weights, out, with_rms), outcome.edit.n_matrices};
}

AblationStudy::AdapterExport AblationStudy::export_trial_adapter(
    const Trial& trial, const std::filesystem::path& out, int rank,
    const std::vector<std::pair<std::string, std::string>>& metadata) {
  if (!directions_) throw InvalidArgumentError("call prepare() before exporting a trial");
  reset_weights();  // the adapter is the difference from the original weights
  const auto params = params_from_point(trial.params, options_.per_layer_directions, options_.components);
  const auto made = ablation_adapter(internals(*model_).weights, *directions_, params, options_.norm_preserving, rank);
  write_lora_adapter(made.adapter, out, fmt::format("lathe ablate trial {}", trial.number), metadata);
  return {made.adapter.pairs.size(), made.adapter.pairs.empty() ? 1 : static_cast<int>(made.adapter.pairs[0].rank),
          made.max_rel_error};
}

}  // namespace lathe::edit
