#include "edit/sae.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "backend/cpu/matmul.hpp"
#include "backend/cpu/thread_pool.hpp"
#include "core/matrix.hpp"
#include "core/quant.hpp"
#include "edit/sae_device.hpp"
#include "io/safetensors.hpp"
#include "lathe/error.hpp"

namespace lathe::edit {
namespace {

using nlohmann::json;

// cfg.json files are a few kilobytes; anything far larger is not one (and is not read whole).
constexpr uint64_t kMaxCfgBytes = 16u << 20;
// Bounds on the dimensions, far above published SAEs (d_in 16k, d_sae 16M), so that products of
// them cannot overflow before the shapes are checked against the tensors.
constexpr int64_t kMaxDIn = 1 << 20;
constexpr int64_t kMaxDSae = 1 << 26;
// SAELens's layer-norm epsilon (run_time_activation_ln_in).
constexpr double kLayerNormEps = 1e-5;
// Rows of a topk gate encoded per matmul: bounds the pre-activation scratch to this x d_sae.
constexpr int64_t kTopKRowBlock = 16;

// --- files -----------------------------------------------------------------------------------

struct SaeFiles {
  std::filesystem::path cfg, weights;
};

SaeFiles locate(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    throw NotFoundError(fmt::format("{}: no such SAE directory or file; give the directory holding {} and {}",
                                    path.string(), kSaeConfigFileName, kSaeWeightsFileName));
  const std::filesystem::path dir = std::filesystem::is_directory(path, ec) ? path : path.parent_path();
  SaeFiles files{dir / kSaeConfigFileName, dir / kSaeWeightsFileName};
  for (const auto& f : {files.cfg, files.weights})
    if (!std::filesystem::is_regular_file(f, ec))
      throw NotFoundError(fmt::format("{}: the SAE has no {} (an SAELens SAE directory holds {} and {})",
                                      dir.string(), f.filename().string(), kSaeConfigFileName, kSaeWeightsFileName));
  return files;
}

void check_cfg_size(const std::filesystem::path& path, uint64_t size) {
  if (size > kMaxCfgBytes)
    throw FormatError(path.string(), "cfg.json", 0,
                      fmt::format("the file is {} bytes, more than the {} a cfg.json can be", size, kMaxCfgBytes),
                      "give the SAE's cfg.json (SAELens's configuration, a few kilobytes)");
}

std::string read_cfg_text(const std::filesystem::path& path) {
  std::error_code ec;
  const uint64_t size = std::filesystem::file_size(path, ec);
  if (ec) throw IoError(fmt::format("{}: cannot read the file size: {}", path.string(), ec.message()));
  check_cfg_size(path, size);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(fmt::format("{}: cannot open the file", path.string()));
  std::ostringstream text;
  text << in.rdbuf();
  if (!in && !in.eof()) throw IoError(fmt::format("{}: cannot read the file", path.string()));
  return std::move(text).str();
}

json parse_cfg(std::string_view text, const std::filesystem::path& path) {
  check_cfg_size(path, text.size());
  json cfg = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (cfg.is_discarded())
    throw FormatError(path.string(), "cfg.json", 0, "not valid JSON", "give SAELens's cfg.json of the SAE");
  if (!cfg.is_object())
    throw FormatError(path.string(), "cfg.json", 0, "the top level is not a JSON object",
                      "give SAELens's cfg.json of the SAE");
  return cfg;
}

// --- cfg.json fields ---------------------------------------------------------------------------

[[noreturn]] void bad_field(const std::filesystem::path& cfg, std::string_view field, std::string_view problem,
                            std::string_view remedy) {
  throw FormatError(cfg.string(), std::string(field), 0, std::string(problem), std::string(remedy));
}

[[noreturn]] void unsupported_field(const std::filesystem::path& cfg, std::string_view field, std::string_view problem,
                                    std::string_view remedy) {
  throw UnsupportedError(fmt::format("{}: {}: {}; {}", cfg.string(), field, problem, remedy));
}

const json* field(const json& cfg, std::string_view name) {
  const auto it = cfg.find(name);
  return it == cfg.end() || it->is_null() ? nullptr : &*it;
}

int64_t dimension(const std::filesystem::path& path, const json& cfg, std::string_view name, int64_t max) {
  const json* v = field(cfg, name);
  if (v == nullptr) bad_field(path, name, "missing", "SAELens's cfg.json gives d_in and d_sae");
  if (!v->is_number_integer() || v->get<int64_t>() < 1 || v->get<int64_t>() > max)
    bad_field(path, name, fmt::format("{} is not an integer in 1..{}", v->dump(), max),
              "give the SAE's dimension as a positive integer");
  return v->get<int64_t>();
}

bool boolean(const std::filesystem::path& path, const json& cfg, std::string_view name, bool fallback) {
  const json* v = field(cfg, name);
  if (v == nullptr) return fallback;
  if (!v->is_boolean()) bad_field(path, name, fmt::format("{} is not true or false", v->dump()), "give a boolean");
  return v->get<bool>();
}

std::string text_field(const std::filesystem::path& path, const json& cfg, std::string_view name) {
  const json* v = field(cfg, name);
  if (v == nullptr) return {};
  if (!v->is_string()) bad_field(path, name, fmt::format("{} is not a string", v->dump()), "give a string");
  return v->get<std::string>();
}

// SAELens 6 keeps the hook under "metadata" (earlier 6.x: "meta"); older files at the top level,
// the oldest as "hook_point".
std::string hook_name_of(const std::filesystem::path& path, const json& cfg) {
  for (const char* name : {"hook_name", "hook_point"})
    if (auto s = text_field(path, cfg, name); !s.empty()) return s;
  for (const char* block : {"metadata", "meta"})
    if (const json* m = field(cfg, block); m != nullptr && m->is_object())
      if (auto s = text_field(path, *m, "hook_name"); !s.empty()) return s;
  return {};
}

SaeNormalization normalization_of(const std::filesystem::path& path, const json& cfg) {
  const json* v = field(cfg, "normalize_activations");
  if (v == nullptr || (v->is_boolean() && !v->get<bool>())) return SaeNormalization::None;
  const std::string name = v->is_string() ? v->get<std::string>() : "expected_average_only_in";  // true, as SAELens reads it
  if (name == "none") return SaeNormalization::None;
  if (name == "constant_norm_rescale") return SaeNormalization::ConstantNormRescale;
  if (name == "layer_norm") return SaeNormalization::LayerNorm;
  if (name == "expected_average_only_in")
    unsupported_field(path, "normalize_activations",
                      "\"expected_average_only_in\" scales the input by a dataset norm factor kept outside the SAE file",
                      "fold that factor into the weights (SAELens: sae.fold_activation_norm_scaling_factor(f), then "
                      "save_model) and load the saved SAE");
  unsupported_field(path, "normalize_activations", fmt::format("{} is not one lathe implements", v->dump()),
                    "use an SAE with none, constant_norm_rescale or layer_norm");
}

// The architecture and, for topk, k. Older SAELens files say topk through activation_fn[_str].
void read_architecture(const std::filesystem::path& path, const json& cfg, Sae& sae) {
  std::string arch = text_field(path, cfg, "architecture");
  if (arch.empty()) arch = "standard";
  std::string activation = text_field(path, cfg, "activation_fn");
  if (activation.empty()) activation = text_field(path, cfg, "activation_fn_str");
  if (arch == "standard" && activation == "topk") arch = "topk";
  if (arch == "standard") {
    sae.architecture = SaeArchitecture::Standard;
  } else if (arch == "jumprelu") {
    sae.architecture = SaeArchitecture::JumpRelu;
  } else if (arch == "topk") {
    sae.architecture = SaeArchitecture::TopK;
  } else {
    unsupported_field(path, "architecture", fmt::format("\"{}\" is not one lathe implements", arch),
                      "lathe loads standard (ReLU), jumprelu and topk SAEs");
  }
  if (sae.architecture != SaeArchitecture::TopK && !activation.empty() && activation != "relu")
    unsupported_field(path, "activation_fn", fmt::format("\"{}\" is not one lathe implements", activation),
                      "lathe's standard and jumprelu SAEs use relu");
  if (sae.architecture != SaeArchitecture::TopK) return;
  const json* k = field(cfg, "k");
  if (k == nullptr)
    if (const json* kwargs = field(cfg, "activation_fn_kwargs"); kwargs != nullptr && kwargs->is_object())
      k = field(*kwargs, "k");
  if (k == nullptr) bad_field(path, "k", "missing for a topk SAE", "give k, the number of features kept per token");
  if (!k->is_number_integer() || k->get<int64_t>() < 1 || k->get<int64_t>() > sae.d_sae)
    bad_field(path, "k", fmt::format("{} is not an integer in 1..d_sae ({})", k->dump(), sae.d_sae),
              "give k, the number of features kept per token");
  sae.k = k->get<int64_t>();
}

// Settings SAELens has that would change the encoding in ways lathe does not implement.
void refuse_unsupported(const std::filesystem::path& path, const json& cfg) {
  if (boolean(path, cfg, "finetuning_scaling_factor", false))
    unsupported_field(path, "finetuning_scaling_factor", "true (a per-feature decoder scale)",
                      "fold the scale into W_dec and set it to false");
  if (boolean(path, cfg, "rescale_acts_by_decoder_norm", false))
    unsupported_field(path, "rescale_acts_by_decoder_norm", "true (TopK on activations scaled by the decoder norms)",
                      "save the SAE from SAELens with the decoder norms folded in, which sets it to false");
  if (field(cfg, "hook_head_index") != nullptr)
    unsupported_field(path, "hook_head_index", "SAEs of one attention head", "lathe gates the residual stream only");
  if (auto reshape = text_field(path, cfg, "reshape_activations"); !reshape.empty() && reshape != "none")
    unsupported_field(path, "reshape_activations", fmt::format("\"{}\"", reshape),
                      "lathe gates the residual stream only (hook_z SAEs read attention heads)");
}

// --- tensors ---------------------------------------------------------------------------------

std::string shape_text(const std::vector<uint64_t>& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

// The tensor as float32, checked for shape, type and finite values before and after conversion.
std::vector<float> read_tensor(const safetensors::File& file, const std::filesystem::path& path, std::string_view name,
                               const std::vector<uint64_t>& shape) {
  const auto* info = file.find_tensor(name);
  if (info == nullptr)
    throw FormatError(path.string(), std::string(name), 0, fmt::format("tensor missing (expected shape {})", shape_text(shape)),
                      "an SAELens SAE holds W_enc, b_enc, W_dec, b_dec (and threshold for jumprelu)");
  if (info->shape != shape)
    throw FormatError(path.string(), std::string(name), info->file_offset,
                      fmt::format("shape {} does not match d_in / d_sae of cfg.json (expected {})",
                                  shape_text(info->shape), shape_text(shape)),
                      "check that cfg.json belongs to these weights");
  if (info->type != DType::F32 && info->type != DType::F16 && info->type != DType::BF16)
    throw UnsupportedError(fmt::format("{}: tensor {}: type {} is not supported; store the SAE as F32, F16 or BF16",
                                       path.string(), name, dtype_name(info->type)));
  // The reader checked that the bytes match type x shape inside the file, so this allocation is
  // bounded by the file's size.
  std::vector<float> values =
      dequantize(info->type, file.tensor_data(*info), static_cast<int64_t>(info->n_elements()));
  for (size_t i = 0; i < values.size(); ++i)
    if (!std::isfinite(values[i]))
      throw FormatError(path.string(), std::string(name), info->file_offset,
                        fmt::format("element {} is {} (not finite)", i, values[i]),
                        "the SAE file is damaged or was saved from a diverged training run");
  return values;
}

// A scaling_factor tensor of all ones is the no-op SAELens drops; any other would scale features.
void refuse_scaling_factor(const safetensors::File& file, const std::filesystem::path& path) {
  const auto* info = file.find_tensor("scaling_factor");
  if (info == nullptr) return;
  if (info->type != DType::F32 && info->type != DType::F16 && info->type != DType::BF16)
    throw UnsupportedError(fmt::format("{}: tensor scaling_factor: type {} is not supported", path.string(),
                                       dtype_name(info->type)));
  const auto values = dequantize(info->type, file.tensor_data(*info), static_cast<int64_t>(info->n_elements()));
  if (std::any_of(values.begin(), values.end(), [](float v) { return v != 1.0f; }))
    throw UnsupportedError(fmt::format("{}: tensor scaling_factor: a per-feature scale other than 1 is not supported; "
                                       "fold it into W_dec and remove the tensor",
                                       path.string()));
}

std::vector<float> transpose(const std::vector<float>& m, int64_t rows, int64_t cols) {
  std::vector<float> t(m.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) t[static_cast<size_t>(c * rows + r)] = m[static_cast<size_t>(r * cols + c)];
  return t;
}

void read_weights(const safetensors::File& file, Sae& sae) {
  const auto d_in = static_cast<uint64_t>(sae.d_in), d_sae = static_cast<uint64_t>(sae.d_sae);
  sae.w_enc_t = transpose(read_tensor(file, sae.weights_path, "W_enc", {d_in, d_sae}), sae.d_in, sae.d_sae);
  sae.b_enc = read_tensor(file, sae.weights_path, "b_enc", {d_sae});
  sae.w_dec = read_tensor(file, sae.weights_path, "W_dec", {d_sae, d_in});
  sae.b_dec = read_tensor(file, sae.weights_path, "b_dec", {d_in});
  if (sae.architecture == SaeArchitecture::JumpRelu)
    sae.threshold = read_tensor(file, sae.weights_path, "threshold", {d_sae});
  refuse_scaling_factor(file, sae.weights_path);
}

// --- encoding --------------------------------------------------------------------------------

// The normalization of one row: sae_in = (x - shift) * in_scale - b_dec; decode's output scale.
struct RowNorm {
  double shift = 0, in_scale = 1, out_scale = 1;
};

RowNorm row_norm(const Sae& sae, const float* x) {
  RowNorm n;
  const int64_t d = sae.d_in;
  if (sae.normalization == SaeNormalization::ConstantNormRescale) {
    double ss = 0;
    for (int64_t i = 0; i < d; ++i) ss += double(x[i]) * x[i];
    const double norm = std::sqrt(ss);
    n.in_scale = std::sqrt(double(d)) / norm;  // inf / NaN for a zero row, as in SAELens
    n.out_scale = 1.0 / n.in_scale;
  } else if (sae.normalization == SaeNormalization::LayerNorm) {
    double sum = 0;
    for (int64_t i = 0; i < d; ++i) sum += x[i];
    n.shift = sum / double(d);
    double ss = 0;
    for (int64_t i = 0; i < d; ++i) ss += (x[i] - n.shift) * (x[i] - n.shift);
    const double std = d > 1 ? std::sqrt(ss / double(d - 1)) : 0.0;  // torch's std: n - 1
    n.in_scale = 1.0 / (std + kLayerNormEps);
    n.out_scale = std;
  }
  return n;
}

void sae_input(const Sae& sae, const float* x, const RowNorm& n, float* out) {
  for (int64_t i = 0; i < sae.d_in; ++i) {
    double v = (x[i] - n.shift) * n.in_scale;
    if (sae.apply_b_dec_to_input) v -= sae.b_dec[static_cast<size_t>(i)];
    out[i] = static_cast<float>(v);
  }
}

float dot(const float* a, const float* b, int64_t n) {
  // Four partial sums: independent chains the compiler can keep in registers.
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < n; ++i) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

float pre_activation(const Sae& sae, const float* sae_in, uint32_t j) {
  return dot(sae_in, sae.w_enc_t.data() + static_cast<size_t>(j) * static_cast<size_t>(sae.d_in), sae.d_in) +
         sae.b_enc[j];
}

// Standard and JumpReLU activations of one feature from its pre-activation.
float activate(const Sae& sae, uint32_t j, float pre) {
  const float relu = pre > 0 ? pre : 0.0f;
  if (sae.architecture == SaeArchitecture::JumpRelu) return pre > sae.threshold[j] ? relu : 0.0f;
  return relu;
}

// Whether feature j is among the k largest of pre (ties: the lower index ranks first).
bool in_top_k(const float* pre, int64_t d_sae, int64_t k, uint32_t j) {
  const float v = pre[j];
  int64_t above = 0;
  for (int64_t i = 0; i < d_sae; ++i)
    if (pre[i] > v || (pre[i] == v && i < j))
      if (++above >= k) return false;
  return true;
}

// pre[r][j] = sae_in[r] . W_enc[:, j] + b_enc[j] for every feature, through the CPU matmul.
void all_pre_activations(const Sae& sae, const float* sae_in, int64_t n_rows, float* pre, cpu::ThreadPool& pool) {
  const MatrixView w{DType::F32, reinterpret_cast<const uint8_t*>(sae.w_enc_t.data()), sae.d_sae, sae.d_in,
                     static_cast<size_t>(sae.d_in) * sizeof(float), "W_enc"};
  cpu::matmul(w, sae_in, n_rows, pre, pool);
  for (int64_t r = 0; r < n_rows; ++r)
    for (int64_t j = 0; j < sae.d_sae; ++j) pre[r * sae.d_sae + j] += sae.b_enc[static_cast<size_t>(j)];
}

// Topk's activation of a row of pre-activations, in place.
void top_k_in_place(float* pre, int64_t d_sae, int64_t k) {
  std::vector<uint32_t> order(static_cast<size_t>(d_sae));
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<uint32_t>(i);
  std::nth_element(order.begin(), order.begin() + (k - 1), order.end(), [&](uint32_t a, uint32_t b) {
    return pre[a] > pre[b] || (pre[a] == pre[b] && a < b);
  });
  std::vector<char> keep(static_cast<size_t>(d_sae), 0);
  for (int64_t i = 0; i < k; ++i) keep[order[static_cast<size_t>(i)]] = 1;
  for (int64_t j = 0; j < d_sae; ++j) pre[j] = keep[static_cast<size_t>(j)] && pre[j] > 0 ? pre[j] : 0.0f;
}

// --- feature spec ----------------------------------------------------------------------------

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

[[noreturn]] void bad_spec(std::string_view flag, std::string_view spec, std::string_view problem) {
  throw InvalidArgumentError(fmt::format("{} '{}': {}; give ID (set to 0), ID:VALUE (clamp) or ID*SCALE, separated by "
                                         "commas, e.g. 12,57:-4,90*0.5",
                                         flag, spec, problem));
}

float parse_number(std::string_view text, std::string_view flag, std::string_view spec, std::string_view item) {
  if (!text.empty() && text.front() == '+') text.remove_prefix(1);
  float v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || !std::isfinite(v))
    bad_spec(flag, spec, fmt::format("in '{}', '{}' is not a finite number", item, text));
  return v;
}

SaeFeatureEdit parse_item(std::string_view item, std::string_view flag, std::string_view spec) {
  SaeFeatureEdit e;
  const size_t op = item.find_first_of(":*");
  const std::string_view id = trim(item.substr(0, op));
  const auto [end, ec] = std::from_chars(id.data(), id.data() + id.size(), e.id);
  if (id.empty() || ec != std::errc() || end != id.data() + id.size())
    bad_spec(flag, spec, fmt::format("in '{}', '{}' is not a feature id (a whole number >= 0)", item, id));
  if (op == std::string_view::npos) return e;  // ID: ablate, = ID:0
  e.kind = item[op] == ':' ? SaeFeatureEdit::Kind::Set : SaeFeatureEdit::Kind::Scale;
  e.value = parse_number(trim(item.substr(op + 1)), flag, spec, item);
  return e;
}

}  // namespace

// --- public ----------------------------------------------------------------------------------

std::string_view sae_architecture_name(SaeArchitecture a) noexcept {
  switch (a) {
    case SaeArchitecture::Standard: return "standard";
    case SaeArchitecture::JumpRelu: return "jumprelu";
    case SaeArchitecture::TopK: return "topk";
  }
  return "?";
}

std::string_view sae_normalization_name(SaeNormalization n) noexcept {
  switch (n) {
    case SaeNormalization::None: return "none";
    case SaeNormalization::ConstantNormRescale: return "constant_norm_rescale";
    case SaeNormalization::LayerNorm: return "layer_norm";
  }
  return "?";
}

std::string Sae::describe() const {
  return fmt::format("SAE {} ({}{}, {} -> {} features)", cfg_path.parent_path().string(),
                     sae_architecture_name(architecture), architecture == SaeArchitecture::TopK ? fmt::format(" k={}", k) : "",
                     d_in, d_sae);
}

namespace {

// Every cfg.json field first (cheap, and a wrong setting is named before any tensor is read).
Sae build_sae(std::string_view cfg_text, const safetensors::File& weights, const SaeFiles& files) {
  const json cfg = parse_cfg(cfg_text, files.cfg);
  Sae sae;
  sae.cfg_path = files.cfg;
  sae.weights_path = files.weights;
  sae.d_in = dimension(files.cfg, cfg, "d_in", kMaxDIn);
  sae.d_sae = dimension(files.cfg, cfg, "d_sae", kMaxDSae);
  read_architecture(files.cfg, cfg, sae);
  refuse_unsupported(files.cfg, cfg);
  sae.normalization = normalization_of(files.cfg, cfg);
  sae.apply_b_dec_to_input = boolean(files.cfg, cfg, "apply_b_dec_to_input", true);
  sae.hook_name = hook_name_of(files.cfg, cfg);
  read_weights(weights, sae);
  return sae;
}

}  // namespace

Sae load_sae(const std::filesystem::path& path) {
  const SaeFiles files = locate(path);
  const std::string cfg_text = read_cfg_text(files.cfg);
  return build_sae(cfg_text, safetensors::File::open(files.weights), files);
}

Sae parse_sae(std::string_view cfg_text, std::span<const uint8_t> weights, const std::filesystem::path& cfg_path,
              const std::filesystem::path& weights_path) {
  return build_sae(cfg_text, safetensors::File::parse(weights, weights_path.string()), {cfg_path, weights_path});
}

HookSite sae_hook_site(std::string_view name, std::string_view where) {
  // TransformerLens: blocks.{i}.hook_resid_{pre,mid,post}; lathe: blocks.{i}.resid_{...}.
  std::string lathe_name(name);
  if (const size_t at = lathe_name.find(".hook_resid_"); at != std::string::npos && name.starts_with("blocks."))
    lathe_name.erase(at + 1, 5);  // drop "hook_"
  try {
    return HookSite::parse(lathe_name);
  } catch (const InvalidArgumentError&) {
  }
  if (name.find("hook_") != std::string_view::npos)
    throw UnsupportedError(fmt::format("{}: the hook point '{}' is not in the residual stream; lathe gates "
                                       "blocks.<i>.hook_resid_pre|hook_resid_mid|hook_resid_post (give another with "
                                       "--sae-hook, or use an SAE trained there)",
                                       where, name));
  throw InvalidArgumentError(fmt::format("{}: '{}' is not a hook point; use blocks.<i>.hook_resid_pre|hook_resid_mid|"
                                         "hook_resid_post (SAELens) or blocks.<i>.resid_pre|resid_mid|resid_post",
                                         where, name));
}

void check_sae_fits(const Sae& sae, HookSite site, uint32_t n_layer, uint32_t n_embd) {
  if (sae.d_in != static_cast<int64_t>(n_embd))
    throw InvalidArgumentError(fmt::format("{}: d_in is {} but the model's hidden size (n_embd) is {}; use an SAE "
                                           "trained on this model",
                                           sae.cfg_path.string(), sae.d_in, n_embd));
  if (site.point != HookPoint::FinalNorm && site.layer >= n_layer)
    throw InvalidArgumentError(fmt::format("{}: the hook {} is past the model's layers 0..{}; use an SAE trained on "
                                           "this model or give the point with --sae-hook",
                                           sae.cfg_path.string(), site.name(), n_layer - 1));
}

std::vector<float> sae_encode(const Sae& sae, const float* x, int64_t n_rows, cpu::ThreadPool* pool) {
  std::unique_ptr<cpu::ThreadPool> own;
  if (pool == nullptr) pool = (own = std::make_unique<cpu::ThreadPool>(1)).get();
  const auto d_in = static_cast<size_t>(sae.d_in), d_sae = static_cast<size_t>(sae.d_sae);
  std::vector<float> sae_in(static_cast<size_t>(n_rows) * d_in);
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* row = x + static_cast<size_t>(r) * d_in;
    sae_input(sae, row, row_norm(sae, row), sae_in.data() + static_cast<size_t>(r) * d_in);
  }
  std::vector<float> f(static_cast<size_t>(n_rows) * d_sae);
  all_pre_activations(sae, sae_in.data(), n_rows, f.data(), *pool);
  for (int64_t r = 0; r < n_rows; ++r) {
    float* row = f.data() + static_cast<size_t>(r) * d_sae;
    if (sae.architecture == SaeArchitecture::TopK) {
      top_k_in_place(row, sae.d_sae, sae.k);
    } else {
      for (size_t j = 0; j < d_sae; ++j) row[j] = activate(sae, static_cast<uint32_t>(j), row[j]);
    }
  }
  return f;
}

std::vector<float> sae_decode(const Sae& sae, const float* f, const float* x, int64_t n_rows) {
  const auto d_in = static_cast<size_t>(sae.d_in), d_sae = static_cast<size_t>(sae.d_sae);
  std::vector<float> out(static_cast<size_t>(n_rows) * d_in);
  std::vector<double> acc(d_in);
  for (int64_t r = 0; r < n_rows; ++r) {
    std::copy(sae.b_dec.begin(), sae.b_dec.end(), acc.begin());
    const float* fr = f + static_cast<size_t>(r) * d_sae;
    for (size_t j = 0; j < d_sae; ++j) {
      if (fr[j] == 0) continue;
      const float* w = sae.w_dec.data() + j * d_in;
      for (size_t i = 0; i < d_in; ++i) acc[i] += double(fr[j]) * w[i];
    }
    const RowNorm n = x != nullptr ? row_norm(sae, x + static_cast<size_t>(r) * d_in) : RowNorm{};
    for (size_t i = 0; i < d_in; ++i) out[static_cast<size_t>(r) * d_in + i] = static_cast<float>(acc[i] * n.out_scale + n.shift);
  }
  return out;
}

std::vector<SaeFeatureEdit> parse_sae_features(std::string_view spec, std::string_view flag) {
  if (trim(spec).empty()) bad_spec(flag, spec, "it is empty");
  std::vector<SaeFeatureEdit> edits;
  std::set<uint32_t> seen;
  size_t begin = 0;
  for (size_t index = 1;; ++index) {
    const size_t comma = spec.find(',', begin);
    const std::string_view item = trim(spec.substr(begin, comma == std::string_view::npos ? spec.npos : comma - begin));
    if (item.empty()) bad_spec(flag, spec, fmt::format("item {} is empty", index));
    const SaeFeatureEdit e = parse_item(item, flag, spec);
    if (!seen.insert(e.id).second) bad_spec(flag, spec, fmt::format("feature {} is given twice", e.id));
    edits.push_back(e);
    if (comma == std::string_view::npos) break;
    begin = comma + 1;
  }
  return edits;
}

void check_sae_features(const std::vector<SaeFeatureEdit>& edits, int64_t d_sae, std::string_view flag) {
  for (const auto& e : edits)
    if (static_cast<int64_t>(e.id) >= d_sae)
      throw InvalidArgumentError(fmt::format("{}: feature {} does not exist: the SAE has features 0..{}", flag, e.id,
                                             d_sae - 1));
}

// --- the gate --------------------------------------------------------------------------------

SaeGate::SaeGate(std::shared_ptr<const Sae> sae, std::vector<SaeFeatureEdit> edits, SaeGateOptions options)
    : sae_(std::move(sae)), edits_(std::move(edits)), options_(options) {
  if (!sae_) throw InvalidArgumentError("SAE gate: no SAE given");
  check_sae_features(edits_, sae_->d_sae, "SAE gate");
  sae_in_.resize(static_cast<size_t>(sae_->d_in));
  delta_.resize(edits_.size());
  if (sae_->architecture == SaeArchitecture::TopK && !edits_.empty()) {
    pool_ = std::make_unique<cpu::ThreadPool>(0);
    pre_.resize(static_cast<size_t>(kTopKRowBlock * sae_->d_sae));
    sae_in_.resize(static_cast<size_t>(kTopKRowBlock * sae_->d_in));
  }
}

SaeGate::~SaeGate() = default;

int64_t SaeGate::width() const noexcept { return sae_->d_in; }

std::string SaeGate::describe() const { return "the SAE gate of " + sae_->describe(); }

// The edited value of one feature.
namespace {
float edited(const SaeFeatureEdit& e, float f, bool clamp_everywhere) {
  if (e.kind == SaeFeatureEdit::Kind::Scale) return f * e.value;
  return f > 0 || clamp_everywhere ? e.value : f;
}
}  // namespace

void SaeGate::check_width(int64_t width) const {
  if (width != sae_->d_in)
    throw InvalidArgumentError(fmt::format("{}: rows of {} elements, expected {}", describe(), width, sae_->d_in));
}

void SaeGate::apply(float* rows, int64_t n_rows, int64_t width) {
  check_width(width);
  if (edits_.empty()) return;
  const auto d_in = static_cast<size_t>(sae_->d_in), d_sae = static_cast<size_t>(sae_->d_sae);
  if (sae_->architecture != SaeArchitecture::TopK) {
    for (int64_t r = 0; r < n_rows; ++r) apply_row(rows + static_cast<size_t>(r) * d_in);
    return;
  }
  // TopK: encode blocks of rows fully (one matmul each), then edit row by row.
  for (int64_t first = 0; first < n_rows; first += kTopKRowBlock) {
    const int64_t n = std::min(kTopKRowBlock, n_rows - first);
    std::vector<RowNorm> norms(static_cast<size_t>(n));
    for (int64_t r = 0; r < n; ++r) {
      const float* x = rows + static_cast<size_t>(first + r) * d_in;
      norms[static_cast<size_t>(r)] = row_norm(*sae_, x);
      sae_input(*sae_, x, norms[static_cast<size_t>(r)], sae_in_.data() + static_cast<size_t>(r) * d_in);
    }
    all_pre_activations(*sae_, sae_in_.data(), n, pre_.data(), *pool_);
    for (int64_t r = 0; r < n; ++r) {
      float* x = rows + static_cast<size_t>(first + r) * d_in;
      const float* pre = pre_.data() + static_cast<size_t>(r) * d_sae;
      bool changed = false;
      for (size_t e = 0; e < edits_.size(); ++e) {
        const uint32_t j = edits_[e].id;
        const float f = in_top_k(pre, sae_->d_sae, sae_->k, j) && pre[j] > 0 ? pre[j] : 0.0f;
        delta_[e] = edited(edits_[e], f, options_.clamp_everywhere) - f;
        changed = changed || delta_[e] != 0;
      }
      if (!changed) continue;
      ++rows_changed_;
      add_decoded_deltas(x, norms[static_cast<size_t>(r)].out_scale);
    }
  }
}

bool SaeGate::prepare_device(int device, int64_t /*max_rows: topk works in chunks of its own*/) {
  if (device_ && device_->device() == device) return true;
  if (refused_device_ == device) return false;
  device_.reset();  // another device: the form moves
  device_ = make_sae_gate_device(*sae_, edits_, options_, device);
  if (!device_) refused_device_ = device;
  return device_ != nullptr;
}

void SaeGate::apply_on_device(float* rows, int64_t n_rows, int64_t width, void* stream) {
  check_width(width);
  if (!device_) throw InternalError(fmt::format("{}: apply_on_device() before prepare_device()", describe()));
  if (!edits_.empty()) device_->apply(rows, n_rows, stream);
}

uint64_t SaeGate::rows_changed_on_device() const { return device_ ? device_->rows_changed() : 0; }

// Standard / JumpReLU: only the edited features are encoded.
void SaeGate::apply_row(float* x) {
  const RowNorm norm = row_norm(*sae_, x);
  sae_input(*sae_, x, norm, sae_in_.data());
  bool changed = false;
  for (size_t e = 0; e < edits_.size(); ++e) {
    const uint32_t j = edits_[e].id;
    const float f = activate(*sae_, j, pre_activation(*sae_, sae_in_.data(), j));
    delta_[e] = edited(edits_[e], f, options_.clamp_everywhere) - f;
    changed = changed || delta_[e] != 0;
  }
  if (!changed) return;
  ++rows_changed_;
  add_decoded_deltas(x, norm.out_scale);
}

// x += scale * sum_e delta_[e] * W_dec[edit e's feature]: decode(f') - decode(f), the features
// not edited cancelling (the reconstruction error stays in x).
void SaeGate::add_decoded_deltas(float* x, double scale) const {
  const auto d_in = static_cast<size_t>(sae_->d_in);
  for (size_t e = 0; e < edits_.size(); ++e) {
    if (delta_[e] == 0) continue;
    const float* w = sae_->w_dec.data() + static_cast<size_t>(edits_[e].id) * d_in;
    const auto a = static_cast<float>(delta_[e] * scale);
    for (size_t i = 0; i < d_in; ++i) x[i] += a * w[i];
  }
}

}  // namespace lathe::edit

namespace lathe::edit {

std::vector<double> sae_edit_attribution(const Sae& sae, const float* rows, const float* grads, int64_t n_rows,
                                         const SaeFeatureEdit& edit, const SaeGateOptions& options,
                                         cpu::ThreadPool* pool) {
  std::unique_ptr<cpu::ThreadPool> own;
  if (pool == nullptr) pool = (own = std::make_unique<cpu::ThreadPool>(1)).get();
  const auto d_in = static_cast<size_t>(sae.d_in), d_sae = static_cast<size_t>(sae.d_sae);
  const MatrixView w_dec{DType::F32, reinterpret_cast<const uint8_t*>(sae.w_dec.data()), sae.d_sae, sae.d_in,
                         d_in * sizeof(float), "W_dec"};
  std::vector<double> total(d_sae, 0.0);
  // Blocks of rows bound the memory: two [rows x d_sae] products per block.
  constexpr int64_t kBlock = 32;
  std::vector<float> projected(static_cast<size_t>(kBlock) * d_sae);
  for (int64_t first = 0; first < n_rows; first += kBlock) {
    const int64_t n = std::min(kBlock, n_rows - first);
    const float* x = rows + static_cast<size_t>(first) * d_in;
    const auto f = sae_encode(sae, x, n, pool);
    // projected[r][j] = W_dec[j] . grad_r
    cpu::matmul(w_dec, grads + static_cast<size_t>(first) * d_in, n, projected.data(), *pool);
    for (int64_t r = 0; r < n; ++r) {
      const double scale = row_norm(sae, x + static_cast<size_t>(r) * d_in).out_scale;
      if (!std::isfinite(scale)) continue;
      const float* fr = f.data() + static_cast<size_t>(r) * d_sae;
      const float* pr = projected.data() + static_cast<size_t>(r) * d_sae;
      for (size_t j = 0; j < d_sae; ++j) {
        const float change = edited(edit, fr[j], options.clamp_everywhere) - fr[j];
        if (change != 0 && std::isfinite(change)) total[j] += scale * double(change) * pr[j];  // NaN: not encodable
      }
    }
  }
  return total;
}

}  // namespace lathe::edit
