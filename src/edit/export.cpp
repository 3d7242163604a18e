#include "edit/export.hpp"

#include <fmt/format.h>

#include <array>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <span>
#include <string_view>

#include "io/gguf.hpp"
#include "io/json_text.hpp"
#include "io/mapped_file.hpp"
#include "io/model_dir.hpp"
#include "io/output_path.hpp"
#include "io/safetensors.hpp"
#include "lathe/error.hpp"
#include "weights/editable.hpp"

namespace lathe::edit {
namespace {

namespace fs = std::filesystem;

// An edited matrix as the export writes it. MatrixView::name is the tensor's name as stored in
// the file it was loaded from in both formats (the GGUF name for GGUF, the Hugging Face name for
// safetensors: model_weights.cpp keeps the stored name), so it keys the file's tensors directly.
struct EditedTensor {
  DType type;
  std::span<const uint8_t> bytes;
  bool written = false;
  std::vector<uint8_t> stacked;  // a stacked expert tensor put back together (bytes points here)
};
using EditedTensors = std::map<std::string, EditedTensor, std::less<>>;

// Every view of a layer: its matrices, the router, the experts, the shared expert.
void layer_views(const LayerWeights& lw, std::vector<const MatrixView*>& views) {
  lw.for_each_matrix([&](const MatrixView& m) { views.push_back(&m); });
  for (const MatrixView* m : {&lw.router, &lw.shexp_gate, &lw.shexp_up, &lw.shexp_down})
    if (m->data != nullptr) views.push_back(m);
  for (const auto* experts : {&lw.exp_gate, &lw.exp_up, &lw.exp_down})
    for (const auto& m : *experts) views.push_back(&m);
}

EditedTensors edited_tensors(const ModelWeights& w) {
  std::vector<const MatrixView*> views = {&w.token_embd, &w.output};
  for (const auto& lw : w.layers) layer_views(lw, views);
  EditedTensors edited;
  // A stacked expert tensor (GGUF) with any expert edited is written whole: every expert's bytes
  // in expert order, the edited ones from their buffers, the others from the file.
  std::map<std::string, std::vector<const MatrixView*>, std::less<>> stacks;
  for (const auto* v : views)
    if (auto stacked = stacked_expert_of(v->name)) {
      auto& experts = stacks[std::string(stacked->first)];
      if (experts.size() <= stacked->second) experts.resize(stacked->second + 1, nullptr);
      experts[stacked->second] = v;
    }
  for (const auto* v : views) {
    if (v->data == nullptr || !is_editable(w, *v)) continue;
    if (const auto stacked = stacked_expert_of(v->name)) {
      const std::string name(stacked->first);
      if (edited.contains(name)) continue;
      EditedTensor t{v->type, {}, false, {}};
      for (const auto* expert : stacks[name]) {
        if (expert == nullptr)
          throw InternalError(fmt::format("{}: an expert of {} has no view; reload the model", w.source, name));
        const auto* begin = expert->data;
        t.stacked.insert(t.stacked.end(), begin, begin + static_cast<size_t>(expert->rows) * expert->row_bytes);
      }
      t.bytes = t.stacked;
      edited.emplace(name, std::move(t));
      continue;
    }
    const size_t size = static_cast<size_t>(v->rows) * v->row_bytes;
    edited.emplace(std::string(v->name), EditedTensor{v->type, {v->data, size}, false, {}});
  }
  return edited;
}

// The bytes to write for one tensor of the input file: the edited buffer when there is one (after
// checking it still fits the file's entry), else the input's own bytes.
std::span<const uint8_t> tensor_bytes(EditedTensors& edited, const std::string& source, const std::string& name,
                                      DType file_type, std::span<const uint8_t> file_bytes, size_t& n_edited) {
  const auto it = edited.find(name);
  if (it == edited.end()) return file_bytes;
  if (it->second.type != file_type || it->second.bytes.size() != file_bytes.size()) {
    throw FormatError(fmt::format("{}: tensor {} is {} ({} bytes) in the file but the edited matrix is {} ({} bytes); "
                                  "the file changed since the model was loaded: reload the model and redo the edit",
                                  source, name, dtype_name(file_type), file_bytes.size(),
                                  dtype_name(it->second.type), it->second.bytes.size()));
  }
  it->second.written = true;
  ++n_edited;
  return it->second.bytes;
}

[[noreturn]] void throw_lost_edit(const std::string& source, const std::string& name) {
  throw NotFoundError(fmt::format("{}: the edited tensor {} is not in the input any more, so the export would lose "
                                  "the edit; the input changed since the model was loaded: reload the model and redo "
                                  "the edit",
                                  source, name));
}

void check_all_written(const EditedTensors& edited, const std::string& source) {
  for (const auto& [name, t] : edited)
    if (!t.written) throw_lost_edit(source, name);
}

bool same_path(const fs::path& a, const fs::path& b) {
  std::error_code ec;
  if (fs::exists(a, ec) && fs::exists(b, ec) && fs::equivalent(a, b, ec) && !ec) return true;
  std::error_code ec_a, ec_b;
  const auto ca = fs::weakly_canonical(a, ec_a), cb = fs::weakly_canonical(b, ec_b);
  return !ec_a && !ec_b && ca == cb;
}

void refuse_input_as_output(const fs::path& in, const fs::path& out) {
  if (same_path(in, out)) {
    throw InvalidArgumentError(fmt::format("export: the output {} is the input model {}; the input is never "
                                           "overwritten (it is memory-mapped and holds the originals): choose "
                                           "another output path",
                                           out.string(), in.string()));
  }
}

void prepare_output_file(const fs::path& out, bool force) {
  std::error_code ec;
  if (fs::is_directory(out, ec)) {
    throw InvalidArgumentError(fmt::format("export: the output {} is a directory but the model is a GGUF file; give a "
                                           "file path such as {}",
                                           out.string(), (out / "model-edited.gguf").string()));
  }
  if (fs::exists(out, ec) && !force && fs::file_size(out, ec) != 0) {
    throw InvalidArgumentError(fmt::format("export: the output file {} already exists; choose another path or pass "
                                           "--force to replace it",
                                           out.string()));
  }
  if (out.has_parent_path()) {
    fs::create_directories(out.parent_path(), ec);
    if (ec)
      throw IoError(fmt::format("export: cannot create the directory {} for {}: {}", out.parent_path().string(),
                                out.string(), ec.message()));
  }
}

void prepare_output_dir(const fs::path& out, bool force) {
  std::error_code ec;
  if (fs::exists(out, ec)) {
    if (!fs::is_directory(out, ec)) {
      throw InvalidArgumentError(fmt::format("export: the output {} exists and is not a directory but the model is a "
                                             "Hugging Face directory; choose a new or empty directory",
                                             out.string()));
    }
    if (!force && !fs::is_empty(out, ec)) {
      throw InvalidArgumentError(fmt::format("export: the output directory {} is not empty; choose an empty one or "
                                             "pass --force to overwrite the files the export writes",
                                             out.string()));
    }
  }
  if (out.has_parent_path()) {
    fs::create_directories(out.parent_path(), ec);
    if (ec) throw IoError(fmt::format("export: cannot create the directory {}: {}", out.parent_path().string(), ec.message()));
  }
}

uint64_t size_of(const fs::path& path) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec) throw IoError(fmt::format("export: cannot read the size of {} just written: {}", path.string(), ec.message()));
  return size;
}

void write_text(const fs::path& path, const std::string& text) {
  AtomicFileWriter out(path);
  out.write(text.data(), text.size());
  out.commit();
}

// ---- GGUF -----------------------------------------------------------------------------------------

ExportResult export_gguf(const ModelWeights& w, const fs::path& out, const ExportOptions& options) {
  const fs::path in(w.source);
  refuse_input_as_output(in, out);
  prepare_output_file(out, options.force);
  const auto file = gguf::File::open(in);
  auto edited = edited_tensors(w);

  gguf::Writer writer;
  // Metadata in file order; general.alignment (when present) also sets the writer's alignment.
  for (const auto& [key, value] : file.metadata()) writer.set(key, value);
  for (const auto& [key, value] : options.metadata) writer.set(key, gguf::Value::str(value));
  ExportResult result;
  for (const auto& info : file.tensors()) {
    const auto bytes = tensor_bytes(edited, file.display_name(), info.name, info.type, file.tensor_data(info),
                                    result.n_edited_tensors);
    writer.add_tensor(info.name, info.type, info.shape, bytes);
  }
  check_all_written(edited, file.display_name());
  writer.write(out, options.progress);
  result.files.push_back(out);
  result.bytes = size_of(out);
  return result;
}

// ---- Hugging Face directory -----------------------------------------------------------------------

constexpr std::string_view kIndexName = "model.safetensors.index.json";

// Files of a model directory that hold weights in another format: copying them would ship the
// unedited weights next to the edited ones.
bool is_other_weight_file(const fs::path& name) {
  static constexpr std::array<std::string_view, 9> kWeightExtensions = {
      ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".onnx"};
  const std::string ext = name.extension().string();
  for (auto e : kWeightExtensions)
    if (ext == e) return true;
  return name.filename() == kIndexName;
}

std::string shard_file_name(const safetensors::File& shard) { return fs::path(shard.display_name()).filename().string(); }

nlohmann::json updated_index(const ModelDir& dir, const nlohmann::json& weight_map, uint64_t total_size) {
  const auto text = [&] {
    MappedFile map(*dir.index_path());
    return std::string(reinterpret_cast<const char*>(map.data()), map.size());
  }();
  auto index = parse_json_text(text, dir.index_path()->string(), "re-download the model's index file");
  if (!index.is_object()) index = nlohmann::json::object();
  // Keep whatever else the index carries; the weight map and total size describe what we wrote.
  if (!index.contains("metadata") || !index["metadata"].is_object()) index["metadata"] = nlohmann::json::object();
  index["metadata"]["total_size"] = total_size;
  index["weight_map"] = weight_map;
  return index;
}

std::vector<fs::path> copy_side_files(const fs::path& in, const fs::path& out) {
  std::vector<fs::path> copied;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(in, ec)) {
    std::error_code entry_ec;
    if (!entry.is_regular_file(entry_ec) || is_other_weight_file(entry.path().filename())) continue;
    // `out` is the staging directory (a registered temporary): a plain copy is enough.
    const fs::path target = out / entry.path().filename();
    fs::copy_file(entry.path(), target, fs::copy_options::overwrite_existing, entry_ec);
    if (entry_ec)
      throw IoError(fmt::format("export: cannot copy {} to {}: {}", entry.path().string(), target.string(),
                                entry_ec.message()));
    copied.push_back(entry.path().filename());
  }
  if (ec) throw IoError(fmt::format("export: cannot list the model directory {}: {}", in.string(), ec.message()));
  return copied;
}

ExportResult export_hf(const ModelWeights& w, const fs::path& out, const ExportOptions& options) {
  const fs::path in(w.source);
  refuse_input_as_output(in, out);
  const auto dir = ModelDir::open(in);
  size_t total_tensors = 0;
  for (const auto& shard : dir.shards()) total_tensors += shard.tensors().size();
  prepare_output_dir(out, options.force);
  auto edited = edited_tensors(w);
  // Every edit must land somewhere before the first shard is written.
  for (const auto& [name, t] : edited)
    if (!dir.find_tensor(name)) throw_lost_edit(dir.path().string(), name);

  // Written into a staging directory and moved into place as one unit (io/output_path.hpp): an
  // earlier export in `out` is replaced, stale weight files included, and no reader sees a mix.
  StagedDirectory staged(out);
  const fs::path& stage = staged.staging();
  std::vector<std::string> names;  // relative to out, in writing order
  nlohmann::json weight_map = nlohmann::json::object();
  uint64_t total_size = 0;
  size_t done = 0;
  size_t n_edited = 0;
  for (const auto& shard : dir.shards()) {
    safetensors::Writer writer;
    for (const auto& [key, value] : shard.metadata()) writer.set_metadata(key, value);
    if (!shard.metadata().count("format")) writer.set_metadata("format", "pt");  // transformers needs it
    for (const auto& [key, value] : options.metadata) writer.set_metadata(key, value);
    const std::string name = shard_file_name(shard);
    for (const auto& info : shard.tensors()) {
      const auto bytes = tensor_bytes(edited, shard.display_name(), info.name, info.type, shard.tensor_data(info),
                                      n_edited);
      writer.add_tensor(info.name, info.type, info.shape, bytes);
      weight_map[info.name] = name;
      total_size += bytes.size();
    }
    writer.write(stage / name);
    names.push_back(name);
    done += shard.tensors().size();
    if (options.progress) options.progress(done, total_tensors);
  }
  if (dir.index_path()) {
    write_text(stage / std::string(kIndexName), updated_index(dir, weight_map, total_size).dump(2) + "\n");
    names.emplace_back(kIndexName);
  }
  for (auto& f : copy_side_files(in, stage)) names.push_back(f.string());
  uint64_t bytes = 0;
  for (const auto& name : names) bytes += size_of(stage / name);
  staged.commit();

  ExportResult result;
  result.n_edited_tensors = n_edited;
  result.bytes = bytes;
  for (const auto& name : names) result.files.push_back(out / name);
  return result;
}

}  // namespace

ExportResult export_model(const ModelWeights& w, const fs::path& out, const ExportOptions& options) {
  if (out.empty()) throw InvalidArgumentError("export: no output path given; pass the file or directory to write");
  if (w.format == "gguf") return export_gguf(w, out, options);
  if (w.format == "safetensors") return export_hf(w, out, options);
  throw UnsupportedError(fmt::format("export: {} was loaded from format '{}', which export cannot write (supported: "
                                     "gguf, safetensors)",
                                     w.source, w.format));
}

}  // namespace lathe::edit
