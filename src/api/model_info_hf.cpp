// inspect_model() for Hugging Face model directories (and hub cache ids).
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "api/model_info_detail.hpp"
#include "io/json_text.hpp"
#include "io/mapped_file.hpp"
#include "io/model_dir.hpp"
#include "lathe/error.hpp"

namespace lathe::detail {
namespace {

// tokenizer_config.json writes special tokens as "text" or {"content": "text", ...}.
std::string token_content(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return "";
}

std::string short_json(const nlohmann::json& v) {
  std::string s = v.dump();
  if (s.size() > 120) s = s.substr(0, 117) + "...";
  return s;
}

TokenizerSummary hf_tokenizer_summary(const ModelDir& dir) {
  TokenizerSummary t;
  std::unordered_map<std::string, int64_t> ids;  // token text -> id, for the special tokens
  if (const auto& path = dir.tokenizer_json_path()) {
    const MappedFile file(*path);
    const nlohmann::json tok = parse_json_text(
        std::string_view(reinterpret_cast<const char*>(file.data()), file.size()), path->string(), "re-download tokenizer.json");
    if (!tok.is_object())
      throw FormatError(fmt::format("{}: is a JSON {}, not an object; re-download tokenizer.json", path->string(), tok.type_name()));
    t.present = true;
    t.source = path->string();
    const auto& model = tok.value("model", nlohmann::json::object());
    t.model = model.value("type", std::string("?"));
    if (const auto pre = tok.find("pre_tokenizer"); pre != tok.end() && pre->is_object())
      t.pre = pre->value("type", std::string(""));
    if (const auto vocab = model.find("vocab"); vocab != model.end()) {
      t.n_tokens = vocab->size();
      if (vocab->is_object())
        for (const auto& [text, id] : vocab->items())
          if (id.is_number_integer()) ids.emplace(text, id.get<int64_t>());
    }
    if (const auto merges = model.find("merges"); merges != model.end()) t.n_merges = merges->size();
    if (const auto added = tok.find("added_tokens"); added != tok.end() && added->is_array()) {
      t.n_added = added->size();
      for (const auto& a : *added)
        if (a.is_object() && a.contains("content") && a.contains("id") && a["id"].is_number_integer())
          ids[token_content(a)] = a["id"].get<int64_t>();
    }
  }
  if (const auto& cfg = dir.tokenizer_config()) {
    t.present = true;
    if (t.source.empty()) t.source = dir.tokenizer_config_path()->string();
    const auto special = [&](const char* key, std::string& text, std::optional<int64_t>& id) {
      if (const auto it = cfg->find(key); it != cfg->end()) {
        text = token_content(*it);
        if (const auto found = ids.find(text); found != ids.end()) id = found->second;
      }
    };
    std::string unk, pad;
    special("bos_token", t.bos_token, t.bos_id);
    special("eos_token", t.eos_token, t.eos_id);
    special("unk_token", unk, t.unk_id);
    special("pad_token", pad, t.pad_id);
    if (const auto it = cfg->find("add_bos_token"); it != cfg->end() && it->is_boolean()) t.add_bos = it->get<bool>();
    if (const auto it = cfg->find("add_eos_token"); it != cfg->end() && it->is_boolean()) t.add_eos = it->get<bool>();
    if (const auto it = cfg->find("chat_template"); it != cfg->end() && !it->is_null()) {
      t.has_chat_template = true;
      t.chat_template_chars = it->is_string() ? it->get_ref<const std::string&>().size() : it->dump().size();
    }
  }
  return t;
}

}  // namespace

ModelInfo inspect_hf_dir(const std::string& path_or_hub_id) {
  const auto path = resolve_model_path(path_or_hub_id);
  const auto dir = ModelDir::open(path);
  ModelInfo info;
  info.path = path.string();
  info.format = "safetensors";
  for (const auto& shard : dir.shards()) {
    info.files.push_back(std::filesystem::path(shard.display_name()).filename().string());
    info.file_bytes += shard.file_size();
  }
  info.name = path.filename().string();
  if (const auto* name = dir.find("_name_or_path"); name && name->is_string()) info.name = name->get<std::string>();
  if (const auto* type = dir.find("model_type"); type && type->is_string()) info.architecture = type->get<std::string>();
  for (const auto& [key, value] : dir.config().items()) info.metadata.emplace_back(key, short_json(value));
  try {
    fill_hparams(info, hparams_from_hf_config(dir.config(), dir.config_path().string()));
  } catch (const UnsupportedError& e) {
    info.architecture_problem = e.what();
  }
  info.tokenizer = hf_tokenizer_summary(dir);
  for (const auto& name : dir.tensor_names()) {
    const auto ref = dir.tensor(name);
    info.tensors.push_back({name, std::string(dtype_name(ref.info->type)), ref.info->shape, ref.info->n_bytes(),
                            std::filesystem::path(ref.shard->display_name()).filename().string()});
  }
  return info;
}

}  // namespace lathe::detail
