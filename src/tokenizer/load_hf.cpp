// Loader for Hugging Face tokenizer.json (+ tokenizer_config.json). The normalizer,
// pre_tokenizer and decoder sections are interpreted generically; components lathe does not
// implement are refused with UnsupportedError naming the component.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "io/gguf.hpp"
#include "io/json_text.hpp"
#include "lathe/error.hpp"
#include "tokenizer/pipeline.hpp"
#include "tokenizer/tokenizer.hpp"

namespace lathe::tokenizer {

namespace {

using json = nlohmann::json;

constexpr uint64_t kMaxTokenId = 1u << 24;  // far above any real vocabulary; bounds allocation
constexpr uint64_t kMaxJsonBytes = 1ull << 30;

struct Context {
  std::string file;  // display name for errors

  [[noreturn]] void fail(const std::string& field, const std::string& problem, const std::string& remedy) const {
    throw FormatError(file, field, 0, problem, remedy);
  }
  [[noreturn]] void unsupported(const std::string& field, const std::string& what) const {
    throw UnsupportedError(file + ": " + field + ": " + what +
                           " is not supported by lathe's tokenizer; see docs/TOKENIZER.md for what is");
  }
  const json& member(const json& object, const char* key, const std::string& field) const {
    if (!object.is_object() || !object.contains(key)) fail(field + "." + key, "missing", "the file is not a valid tokenizer.json");
    return object.at(key);
  }
  std::string string(const json& value, const std::string& field) const {
    if (!value.is_string()) fail(field, "expected a string, found " + std::string(value.type_name()), "fix the file");
    return value.get<std::string>();
  }
  bool flag(const json& object, const char* key, bool fallback, const std::string& field) const {
    if (!object.is_object() || !object.contains(key) || object.at(key).is_null()) return fallback;
    if (!object.at(key).is_boolean()) fail(field + "." + key, "expected true or false", "fix the file");
    return object.at(key).get<bool>();
  }
};

json parse_json(std::string_view text, const std::string& file) {
  return parse_json_text(text, file, "re-download the file");
}

std::string read_text_file(const std::filesystem::path& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) throw NotFoundError(path.string() + ": cannot read (" + ec.message() + "); check the path");
  if (size > kMaxJsonBytes) throw FormatError(path.string(), "size", 0, "file is larger than 1 GiB", "this is not a tokenizer file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(path.string() + ": cannot open for reading; check permissions");
  std::string text(static_cast<size_t>(size), '\0');
  in.read(text.data(), static_cast<std::streamsize>(size));
  if (!in) throw IoError(path.string() + ": read failed");
  return text;
}

// "<0x0A>"-style byte tokens get TokenType::Byte.
bool looks_like_byte_token(const std::string& text) {
  auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f'); };
  return text.size() == 6 && text.compare(0, 3, "<0x") == 0 && hex(text[3]) && hex(text[4]) && text[5] == '>';
}

void load_model(const Context& ctx, const json& model, Vocabulary& vocab, BpeOptions& options, std::string& unk_text) {
  const std::string field = "model";
  if (model.contains("type") && !(model.at("type").is_string() && model.at("type") == "BPE"))
    ctx.unsupported("model.type", "model type " + model.at("type").dump() + " (only BPE)");
  if (model.contains("dropout") && !model.at("dropout").is_null() &&
      !(model.at("dropout").is_number() && model.at("dropout").get<double>() == 0.0))
    ctx.unsupported("model.dropout", "BPE dropout");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (model.contains(key) && !model.at(key).is_null() && !(model.at(key).is_string() && model.at(key).get<std::string>().empty()))
      ctx.unsupported(std::string("model.") + key, "a non-empty subword prefix/suffix");
  options.byte_fallback = ctx.flag(model, "byte_fallback", false, field);
  options.fuse_unk = ctx.flag(model, "fuse_unk", false, field);
  options.ignore_merges = ctx.flag(model, "ignore_merges", false, field);
  if (model.contains("unk_token") && !model.at("unk_token").is_null()) unk_text = ctx.string(model.at("unk_token"), "model.unk_token");

  const json& entries = ctx.member(model, "vocab", field);
  if (!entries.is_object()) ctx.fail("model.vocab", "expected an object of token -> id", "fix the file");
  for (const auto& [text, id_value] : entries.items()) {
    if (!id_value.is_number_unsigned() || id_value.get<uint64_t>() >= kMaxTokenId)
      ctx.fail("model.vocab[\"" + text + "\"]", "id must be an integer in [0, 2^24)", "fix the file");
    const auto id = id_value.get<uint64_t>();
    if (id >= vocab.tokens.size()) {
      vocab.tokens.resize(id + 1);
      vocab.types.resize(id + 1, TokenType::Unused);
    }
    vocab.tokens[id] = text;
    vocab.types[id] = options.byte_fallback && looks_like_byte_token(text) ? TokenType::Byte : TokenType::Normal;
  }

  const json& merges = ctx.member(model, "merges", field);
  if (!merges.is_array()) ctx.fail("model.merges", "expected an array", "fix the file");
  vocab.merges.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const json& merge = merges[i];
    const std::string where = "model.merges[" + std::to_string(i) + "]";
    if (merge.is_string()) {
      const std::string text = merge.get<std::string>();
      const size_t space = text.find(' ');
      if (space == std::string::npos || text.find(' ', space + 1) != std::string::npos)
        ctx.fail(where, "expected \"left right\" with exactly one space", "fix the file");
      vocab.merges.emplace_back(text.substr(0, space), text.substr(space + 1));
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
      vocab.merges.emplace_back(merge[0].get<std::string>(), merge[1].get<std::string>());
    } else {
      ctx.fail(where, "expected a string or a pair of strings", "fix the file");
    }
  }
}

void load_added_tokens(const Context& ctx, const json& added, Vocabulary& vocab) {
  if (added.is_null()) return;
  if (!added.is_array()) ctx.fail("added_tokens", "expected an array", "fix the file");
  for (size_t i = 0; i < added.size(); ++i) {
    const std::string field = "added_tokens[" + std::to_string(i) + "]";
    const json& entry = added[i];
    AddedToken token;
    const json& id_value = ctx.member(entry, "id", field);
    if (!id_value.is_number_unsigned() || id_value.get<uint64_t>() >= kMaxTokenId)
      ctx.fail(field + ".id", "id must be an integer in [0, 2^24)", "fix the file");
    token.id = static_cast<TokenId>(id_value.get<uint64_t>());
    token.content = ctx.string(ctx.member(entry, "content", field), field + ".content");
    token.special = ctx.flag(entry, "special", false, field);
    token.lstrip = ctx.flag(entry, "lstrip", false, field);
    token.rstrip = ctx.flag(entry, "rstrip", false, field);
    token.normalized = ctx.flag(entry, "normalized", !token.special, field);
    token.single_word = ctx.flag(entry, "single_word", false, field);
    const auto id = static_cast<size_t>(token.id);
    if (id >= vocab.tokens.size()) {
      vocab.tokens.resize(id + 1);
      vocab.types.resize(id + 1, TokenType::Unused);
    }
    vocab.tokens[id] = token.content;
    vocab.types[id] = token.special ? TokenType::Control : TokenType::UserDefined;
    vocab.added_tokens.push_back(std::move(token));
  }
}

void load_normalizer(const Context& ctx, const json& node, const std::string& field, Pipeline& pipeline) {
  if (node.is_null()) return;
  const std::string type = ctx.string(ctx.member(node, "type", field), field + ".type");
  NormalizerStep step;
  if (type == "Sequence") {
    const json& list = ctx.member(node, "normalizers", field);
    if (!list.is_array()) ctx.fail(field + ".normalizers", "expected an array", "fix the file");
    for (size_t i = 0; i < list.size(); ++i) load_normalizer(ctx, list[i], field + ".normalizers[" + std::to_string(i) + "]", pipeline);
    return;
  } else if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    step.kind = NormalizerStep::Kind::Unicode;
    step.form = type == "NFC" ? NormalForm::NFC : type == "NFD" ? NormalForm::NFD : type == "NFKC" ? NormalForm::NFKC : NormalForm::NFKD;
  } else if (type == "Prepend") {
    step.kind = NormalizerStep::Kind::Prepend;
    step.content = ctx.string(ctx.member(node, "prepend", field), field + ".prepend");
  } else if (type == "Replace") {
    step.kind = NormalizerStep::Kind::Replace;
    const json& pattern = ctx.member(node, "pattern", field);
    if (!pattern.is_object() || !pattern.contains("String")) ctx.unsupported(field + ".pattern", "a Replace normalizer with a Regex pattern");
    step.pattern = ctx.string(pattern.at("String"), field + ".pattern.String");
    step.content = ctx.string(ctx.member(node, "content", field), field + ".content");
  } else {
    ctx.unsupported(field, "normalizer " + type);
  }
  pipeline.normalizers.push_back(std::move(step));
}

SplitBehavior parse_behavior(const Context& ctx, const std::string& text, const std::string& field) {
  if (text == "Removed") return SplitBehavior::Removed;
  if (text == "Isolated") return SplitBehavior::Isolated;
  if (text == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
  if (text == "MergedWithNext") return SplitBehavior::MergedWithNext;
  if (text == "Contiguous") return SplitBehavior::Contiguous;
  ctx.fail(field, "unknown split behavior \"" + text + "\"", "use one of Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous");
}

}  // namespace

namespace {

void load_pre_tokenizer(const Context& ctx, const json& node, const std::string& field, Pipeline& pipeline) {
  if (node.is_null()) return;
  const std::string type = ctx.string(ctx.member(node, "type", field), field + ".type");
  if (pipeline.byte_level)
    ctx.unsupported(field, "a pre-tokenizer after ByteLevel (ByteLevel must come last)");
  if (type == "Sequence") {
    const json& list = ctx.member(node, "pretokenizers", field);
    if (!list.is_array()) ctx.fail(field + ".pretokenizers", "expected an array", "fix the file");
    for (size_t i = 0; i < list.size(); ++i)
      load_pre_tokenizer(ctx, list[i], field + ".pretokenizers[" + std::to_string(i) + "]", pipeline);
  } else if (type == "Split") {
    const json& pattern = ctx.member(node, "pattern", field);
    std::string regex;
    if (pattern.is_object() && pattern.contains("Regex")) regex = ctx.string(pattern.at("Regex"), field + ".pattern.Regex");
    else if (pattern.is_object() && pattern.contains("String")) regex = Regex::escape(ctx.string(pattern.at("String"), field + ".pattern.String"));
    else ctx.fail(field + ".pattern", "expected {\"Regex\": ...} or {\"String\": ...}", "fix the file");
    PreTokenizerStep step;
    step.regex = std::make_shared<Regex>(regex, ctx.file + ": " + field + ".pattern");
    step.behavior = parse_behavior(ctx, ctx.string(ctx.member(node, "behavior", field), field + ".behavior"), field + ".behavior");
    step.invert = ctx.flag(node, "invert", false, field);
    pipeline.pre_tokenizers.push_back(std::move(step));
  } else if (type == "Digits") {
    PreTokenizerStep step;
    const bool individual = ctx.flag(node, "individual_digits", false, field);
    step.regex = std::make_shared<Regex>(individual ? R"(\p{N})" : R"(\p{N}+)", ctx.file + ": " + field);
    step.behavior = SplitBehavior::Isolated;
    pipeline.pre_tokenizers.push_back(std::move(step));
  } else if (type == "ByteLevel") {
    if (ctx.flag(node, "add_prefix_space", false, field)) ctx.unsupported(field + ".add_prefix_space", "ByteLevel add_prefix_space=true");
    if (ctx.flag(node, "use_regex", true, field)) {
      PreTokenizerStep step;
      step.regex = std::make_shared<Regex>(kGpt2Pattern, ctx.file + ": " + field);
      pipeline.pre_tokenizers.push_back(std::move(step));
    }
    pipeline.byte_level = true;
  } else {
    ctx.unsupported(field, "pre-tokenizer " + type);
  }
}

void load_decoder(const Context& ctx, const json& node, const std::string& field, Pipeline& pipeline) {
  if (node.is_null()) return;
  const std::string type = ctx.string(ctx.member(node, "type", field), field + ".type");
  DecoderStep step;
  if (type == "Sequence") {
    const json& list = ctx.member(node, "decoders", field);
    if (!list.is_array()) ctx.fail(field + ".decoders", "expected an array", "fix the file");
    for (size_t i = 0; i < list.size(); ++i) load_decoder(ctx, list[i], field + ".decoders[" + std::to_string(i) + "]", pipeline);
    return;
  } else if (type == "ByteLevel") {
    step.kind = DecoderStep::Kind::ByteLevel;
  } else if (type == "Replace") {
    step.kind = DecoderStep::Kind::Replace;
    const json& pattern = ctx.member(node, "pattern", field);
    if (!pattern.is_object() || !pattern.contains("String")) ctx.unsupported(field + ".pattern", "a Replace decoder with a Regex pattern");
    step.pattern = ctx.string(pattern.at("String"), field + ".pattern.String");
    step.content = ctx.string(ctx.member(node, "content", field), field + ".content");
  } else if (type == "ByteFallback") {
    step.kind = DecoderStep::Kind::ByteFallback;
  } else if (type == "Fuse") {
    step.kind = DecoderStep::Kind::Fuse;
  } else if (type == "Strip") {
    step.kind = DecoderStep::Kind::Strip;
    step.content = ctx.string(ctx.member(node, "content", field), field + ".content");
    const json& start = ctx.member(node, "start", field);
    const json& stop = ctx.member(node, "stop", field);
    if (!start.is_number_unsigned() || !stop.is_number_unsigned()) ctx.fail(field, "start/stop must be unsigned integers", "fix the file");
    if (stop.get<uint64_t>() != 0) ctx.unsupported(field + ".stop", "a Strip decoder with stop != 0");
    const bool fused = std::any_of(pipeline.decoders.begin(), pipeline.decoders.end(),
                                   [](const DecoderStep& s) { return s.kind == DecoderStep::Kind::Fuse; });
    if (!fused) ctx.unsupported(field, "a Strip decoder without a preceding Fuse");
    step.start = static_cast<size_t>(std::min<uint64_t>(start.get<uint64_t>(), 1024));
  } else {
    ctx.unsupported(field, "decoder " + type);
  }
  pipeline.decoders.push_back(std::move(step));
}

// A special-token setting of tokenizer_config.json: a string, {"content": ...}, or null.
std::optional<std::string> config_token(const json& config, const char* key) {
  if (!config.is_object() || !config.contains(key)) return std::nullopt;
  const json& value = config.at(key);
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content") && value.at("content").is_string()) return value.at("content").get<std::string>();
  return std::nullopt;
}

void apply_config(const Context& ctx, const json& tokenizer, const json& config, Vocabulary& vocab) {
  // Defaults from the post-processor (what HF encode(add_special_tokens=True) would add).
  const json& post = tokenizer.contains("post_processor") ? tokenizer.at("post_processor") : json();
  if (post.is_object() && post.value("type", "") == "TemplateProcessing" && post.contains("single") && post.at("single").is_array()) {
    const json& single = post.at("single");
    auto special_id = [&](const json& item) -> std::optional<TokenId> {
      if (!item.is_object() || !item.contains("SpecialToken")) return std::nullopt;
      const json& name = item.at("SpecialToken").value("id", json());
      return name.is_string() ? vocab.find(name.get<std::string>()) : std::nullopt;
    };
    if (!single.empty())
      if (auto id = special_id(single.front())) vocab.bos = *id, vocab.add_bos = true;
    if (single.size() > 1)
      if (auto id = special_id(single.back())) vocab.eos = *id, vocab.add_eos = true;
  }
  if (!config.is_object()) return;
  auto lookup = [&](const char* key, std::optional<TokenId>& slot) {
    if (auto text = config_token(config, key)) {
      auto id = vocab.find(*text);
      if (!id) ctx.fail(std::string("tokenizer_config.json: ") + key, "token \"" + *text + "\" is not in the vocabulary", "fix the file");
      slot = *id;
    }
  };
  lookup("bos_token", vocab.bos);
  lookup("eos_token", vocab.eos);
  lookup("unk_token", vocab.unk);
  lookup("pad_token", vocab.pad);
  if (config.contains("add_bos_token") && config.at("add_bos_token").is_boolean()) vocab.add_bos = config.at("add_bos_token").get<bool>();
  if (config.contains("add_eos_token") && config.at("add_eos_token").is_boolean()) vocab.add_eos = config.at("add_eos_token").get<bool>();
  if (config.contains("chat_template")) {
    const json& tmpl = config.at("chat_template");
    if (tmpl.is_string()) {
      vocab.chat_template = tmpl.get<std::string>();
    } else if (tmpl.is_array()) {  // [{"name": "default", "template": ...}, ...]
      for (const json& entry : tmpl)
        if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") && entry.at("template").is_string())
          vocab.chat_template = entry.at("template").get<std::string>();
    }
  }
}

}  // namespace

Tokenizer Tokenizer::from_hf_json(std::string_view tokenizer_json, std::string_view config_json, const std::string& display_name) {
  const Context ctx{display_name};
  const json root = parse_json(tokenizer_json, display_name);
  const json config = config_json.empty() ? json() : parse_json(config_json, display_name + " (tokenizer_config.json)");
  if (!root.is_object()) ctx.fail("json", "expected a JSON object at the top level", "this is not a tokenizer.json");

  auto vocab = std::make_unique<Vocabulary>();
  auto pipeline = std::make_unique<Pipeline>();
  BpeOptions options;
  std::string unk_text;
  load_model(ctx, ctx.member(root, "model", "tokenizer"), *vocab, options, unk_text);
  load_added_tokens(ctx, root.value("added_tokens", json()), *vocab);
  vocab->build_index();
  if (!unk_text.empty()) {
    vocab->unk = vocab->find(unk_text);
    if (!vocab->unk) ctx.fail("model.unk_token", "\"" + unk_text + "\" is not in the vocabulary", "fix the file");
  }
  load_normalizer(ctx, root.value("normalizer", json()), "normalizer", *pipeline);
  load_pre_tokenizer(ctx, root.value("pre_tokenizer", json()), "pre_tokenizer", *pipeline);
  load_decoder(ctx, root.value("decoder", json()), "decoder", *pipeline);
  apply_config(ctx, root, config, *vocab);
  pipeline->model = std::make_unique<BpeModel>(*vocab, options, display_name);
  return Tokenizer(std::move(vocab), std::move(pipeline));
}

Tokenizer Tokenizer::from_hf_file(const std::filesystem::path& path) {
  const std::filesystem::path file = std::filesystem::is_directory(path) ? path / "tokenizer.json" : path;
  if (!std::filesystem::exists(file)) throw NotFoundError(file.string() + ": no such file; expected a Hugging Face tokenizer.json");
  const std::filesystem::path config_path = file.parent_path() / "tokenizer_config.json";
  const std::string config = std::filesystem::exists(config_path) ? read_text_file(config_path) : std::string();
  return from_hf_json(read_text_file(file), config, file.string());
}

Tokenizer Tokenizer::from_path(const std::filesystem::path& path) {
  if (!std::filesystem::exists(path)) throw NotFoundError(path.string() + ": no such file or directory; give a GGUF file, a model directory or a tokenizer.json");
  if (std::filesystem::is_directory(path)) {
    if (std::filesystem::exists(path / "tokenizer.json")) return from_hf_file(path / "tokenizer.json");
    for (const auto& entry : std::filesystem::directory_iterator(path))
      if (entry.is_regular_file() && entry.path().extension() == ".gguf") return from_gguf(gguf::File::open(entry.path()));
    throw NotFoundError(path.string() + ": directory holds neither tokenizer.json nor a .gguf file");
  }
  if (path.extension() == ".json") return from_hf_file(path);
  return from_gguf(gguf::File::open(path));
}

}  // namespace lathe::tokenizer
