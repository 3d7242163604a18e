#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <optional>
#include <sstream>

#include "api/model_impl.hpp"
#include "io/json_text.hpp"
#include "core/quant.hpp"
#include "io/model_dir.hpp"
#include "weights/lora.hpp"
#include "weights/requantize.hpp"

namespace lathe {
namespace {

// Token texts that end a turn in the chat formats of the supported families.
constexpr std::string_view kEndOfTurnTexts[] = {"<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>",
                                                "<|endoftext|>", "<end_of_turn>", "</s>"};

void add_generation_config_eos(const std::filesystem::path& dir, std::unordered_set<TokenId>& ids) {
  const auto path = dir / "generation_config.json";
  if (!std::filesystem::exists(path)) return;
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  const auto config = parse_json_text(text.str(), path.string(), "fix or delete generation_config.json");
  const auto it = config.find("eos_token_id");
  if (it == config.end()) return;
  if (it->is_number_integer()) ids.insert(it->get<TokenId>());
  if (it->is_array())
    for (const auto& id : *it)
      if (id.is_number_integer()) ids.insert(id.get<TokenId>());
}

std::unordered_set<TokenId> end_of_generation_ids(const tokenizer::Vocabulary& vocab, const std::filesystem::path& path) {
  std::unordered_set<TokenId> ids;
  if (vocab.eos) ids.insert(*vocab.eos);
  for (auto text : kEndOfTurnTexts)
    if (auto id = vocab.find(text)) ids.insert(*id);
  if (std::filesystem::is_directory(path)) add_generation_config_eos(path, ids);
  return ids;
}

ModelSummary summarize(const ModelWeights& w, const std::filesystem::path& path) {
  ModelSummary s;
  s.path = path.string();
  s.format = w.format;
  s.architecture = std::string(arch_name(w.hp.arch));
  s.weight_type = w.weight_type;
  s.n_layer = w.hp.n_layer;
  s.n_embd = w.hp.n_embd;
  s.n_ff = w.hp.n_ff;
  s.n_head = w.hp.n_head;
  s.n_head_kv = w.hp.n_head_kv;
  s.head_dim = w.hp.head_dim;
  s.n_vocab = w.hp.n_vocab;
  s.n_ctx_train = w.hp.n_ctx_train;
  s.n_params = w.n_params;
  s.weight_bytes = w.weight_bytes;
  s.n_expert = w.hp.n_expert;
  s.n_expert_used = w.hp.n_expert_used;
  // The routed experts' share not read per token.
  double expert_params = 0, expert_bytes = 0;
  for (const auto& lw : w.layers)
    for (const auto* experts : {&lw.exp_gate, &lw.exp_up, &lw.exp_down})
      for (const auto& m : *experts) {
        expert_params += double(m.rows) * double(m.cols);
        expert_bytes += double(m.rows) * double(m.row_bytes);
      }
  const double unused = w.hp.is_moe() ? 1.0 - double(w.hp.n_expert_used) / w.hp.n_expert : 0.0;
  s.n_params_active = static_cast<uint64_t>(double(w.n_params) - unused * expert_params + 0.5);
  s.weight_bytes_active = static_cast<uint64_t>(double(w.weight_bytes) - unused * expert_bytes + 0.5);
  return s;
}

// Merges the adapters (merge_lora converts their coarsely quantized targets first), then converts
// the weights to `requantize` when given.
std::vector<AppliedLora> apply_adapters(ModelWeights& weights, const std::vector<LoraAdapter>& adapters,
                                        const std::vector<LoraSpec>& specs, std::optional<DType> requantize) {
  std::vector<AppliedLora> applied;
  for (size_t i = 0; i < adapters.size(); ++i) {
    const auto stats = merge_lora(weights, adapters[i], specs[i].scale);
    const auto& promotion = stats.promotion;
    applied.push_back({.path = specs[i].path.string(),
                       .scale = specs[i].scale,
                       .matrices = stats.matrices,
                       .requantization_rel_rms = stats.requantization_rel_rms,
                       .ignored = adapters[i].ignored,
                       .promoted = promotion.matrices,
                       .promoted_from = promotion.from,
                       .promoted_to = promotion.to,
                       .promoted_bytes = promotion.added_bytes});
  }
  if (requantize) requantize_matrices(weights, *requantize);
  return applied;
}

}  // namespace

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::~Model() = default;

std::shared_ptr<const Model> Model::load(const std::filesystem::path& spec, const LoadOptions& options) {
  return load_mutable(spec, options);
}

std::shared_ptr<Model> Model::load_mutable(const std::filesystem::path& spec, const LoadOptions& options) {
  // A replacement chat template is read first: a missing file fails before the weights load.
  std::string template_text;
  if (!options.chat_template_file.empty()) {
    std::ifstream in(options.chat_template_file, std::ios::binary);
    std::ostringstream text;
    if (in) text << in.rdbuf();
    if (!in || in.bad())
      throw IoError(fmt::format("{}: cannot read the chat template file (--template); check the path",
                                options.chat_template_file.string()));
    template_text = text.str();
    if (template_text.empty())
      throw InvalidArgumentError(fmt::format("the chat template file {} (--template) is empty",
                                             options.chat_template_file.string()));
  }
  const auto path = resolve_model_path(spec.string());
  const WeightLoadOptions weight_options{.check_tensors = options.check_tensors};
  // A GGUF file is parsed once for the weights, the tokenizer and the chat template. A
  // directory's parts are separate files (config.json, tokenizer.json, tokenizer_config.json).
  std::shared_ptr<const gguf::File> gguf_file;
  if (!std::filesystem::is_directory(path)) gguf_file = std::make_shared<const gguf::File>(gguf::File::open(path));
  // Adapters are read (and checked on their own) before the weights: a bad file fails at once.
  std::vector<LoraAdapter> adapters;
  for (const auto& spec : options.loras) adapters.push_back(read_lora_adapter(spec.path));
  std::optional<DType> requantize_type;
  if (!options.requantize.empty()) {
    requantize_type = dtype_from_name(options.requantize);
    if (!requantize_type || !can_quantize(*requantize_type))
      throw InvalidArgumentError(fmt::format("cannot requantize to \"{}\": use F32, F16, BF16, Q8_0, Q4_0 or Q4_1",
                                             options.requantize));
  }
  auto weights = gguf_file ? load_model_weights(gguf_file, weight_options) : load_model_weights(path, weight_options);
  const auto applied = apply_adapters(weights, adapters, options.loras, requantize_type);
  auto tok = gguf_file ? tokenizer::Tokenizer::from_gguf(*gguf_file) : tokenizer::Tokenizer::from_path(path);
  if (tok.vocab().size() > weights.hp.n_vocab) {
    throw FormatError(fmt::format("{}: the tokenizer has {} tokens but the embedding matrix only {} rows; the "
                                  "tokenizer does not belong to these weights",
                                  path.string(), tok.vocab().size(), weights.hp.n_vocab));
  }
  auto eog = end_of_generation_ids(tok.vocab(), path);
  auto summary = summarize(weights, path);
  summary.loras = applied;
  ChatTemplateSource chat_template;
  try {
    chat_template = gguf_file ? load_chat_template(*gguf_file) : load_chat_template(path);
  } catch (const Error&) {
    // The model's own template is unusable; a replacement makes it irrelevant (its BOS/EOS text
    // then comes from the vocabulary).
    if (template_text.empty()) throw;
    const auto& vocab = tok.vocab();
    if (vocab.bos) chat_template.bos_token = tok.token_text(*vocab.bos);
    if (vocab.eos) chat_template.eos_token = tok.token_text(*vocab.eos);
  }
  if (!template_text.empty()) {
    chat_template.source = std::move(template_text);
    chat_template.origin = options.chat_template_file.string();
  }
  auto impl = std::unique_ptr<Impl>(new Impl{std::move(weights), std::move(tok), std::move(chat_template),
                                             std::move(eog), std::move(summary)});
  return std::shared_ptr<Model>(new Model(std::move(impl)));
}

const ModelSummary& Model::summary() const noexcept { return impl_->summary; }

std::vector<TokenId> Model::tokenize(std::string_view text, bool add_special, bool parse_special) const {
  return impl_->tokenizer.encode(text, {.add_special = add_special, .parse_special = parse_special});
}

std::string Model::detokenize(std::span<const TokenId> ids, bool skip_special) const {
  return impl_->tokenizer.decode(std::vector<TokenId>(ids.begin(), ids.end()), {.skip_special = skip_special});
}

uint32_t Model::n_vocab() const noexcept { return impl_->weights.hp.n_vocab; }

bool Model::is_end_of_generation(TokenId id) const noexcept { return impl_->end_of_generation.contains(id); }

TokenId Model::bos() const noexcept {
  const auto& bos = impl_->tokenizer.vocab().bos;
  return bos ? *bos : -1;
}

bool Model::has_chat_template() const noexcept { return !impl_->chat_template.source.empty(); }

std::string Model::apply_chat_template(const nlohmann::json& messages, bool add_generation_prompt) const {
  const auto& tmpl = impl_->chat_template;
  if (tmpl.source.empty()) {
    throw NotFoundError(fmt::format("{} has no chat template (tokenizer.chat_template in GGUF, chat_template in "
                                    "tokenizer_config.json); use `lathe run` with a plain prompt instead",
                                    impl_->summary.path));
  }
  return render_chat(tmpl.source, messages, add_generation_prompt, tmpl.bos_token, tmpl.eos_token,
                     nlohmann::json::object(), tmpl.origin);
}

}  // namespace lathe
