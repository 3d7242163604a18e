// Mixtures of experts on the CPU (issue 28): tiny random GGUFs of every MoE architecture
// (tests/common/tiny_moe.hpp: Mixtral's llama layout, qwen2moe with its shared expert, qwen3moe,
// olmoe) against llama.cpp (llama-cpp-python in the test venv, tests/oracle/llama_cpp_compare.py)
// on the same file: teacher-forced logits of 4 sequences, F32 weights and F32 KV caches on both
// sides, so the engines must compute the same function up to float summation order; and Q8_0
// variants made by `lathe quantize`, within llama.cpp's own quantization noise. Then the loader's
// errors, abliteration of every expert (the weight cache restores each bit for bit, the export
// writes the stacked tensors back) and the refusals of what does not take experts yet.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "common/model_logits.hpp"
#include "common/test_support.hpp"
#include "common/tiny_moe.hpp"
#include "lathe/error.hpp"
#include "lathe/lathe.hpp"
#include "edit/ablation.hpp"
#include "edit/control_vector.hpp"
#include "edit/export.hpp"
#include "edit/sae.hpp"
#include "edit/sae_test_support.hpp"
#include "arch/tensor_names.hpp"
#include "io/safetensors.hpp"
#include "weights/editable.hpp"
#include "weights/model_weights.hpp"
#include "weights/weight_cache.hpp"

namespace lathe {
namespace {

const char* const kArchs[] = {"llama", "qwen2moe", "qwen3moe", "olmoe"};

std::vector<std::vector<TokenId>> sequences() {
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> id(0, static_cast<int>(test::kTinyTokens) - 1);
  std::vector<std::vector<TokenId>> out;
  for (size_t n : {24, 7, 40, 1}) {
    std::vector<TokenId> s(n);
    for (auto& t : s) t = id(rng);
    out.push_back(s);
  }
  return out;
}

// lathe's logits of every position, then llama.cpp's report on the same file and sequences.
// With `control_vector` ("FILE:SCALE"), both engines steer with it.
nlohmann::json compare(const test::TempDir& dir, const std::filesystem::path& model_path, KvType kv, const char* llama_kv,
                       const std::filesystem::path& reference = {}, const std::string& control_vector = "") {
  const auto model = Model::load(model_path);
  Session session(model, {.n_ctx = 64, .compute = {.n_threads = 1, .kv_type = kv}});
  if (!control_vector.empty()) {
    auto hooks = std::make_shared<ResidualHooks>();
    edit::add_control_vectors(*hooks, {edit::parse_control_vector_spec(control_vector)}, model->summary().n_layer,
                              model->summary().n_embd, std::nullopt);
    session.set_hooks(hooks);
  }
  const auto seqs = sequences();
  for (size_t i = 0; i < seqs.size(); ++i) {
    session.reset();
    session.eval(seqs[i], true);
    std::ofstream out(dir / ("logits_" + std::to_string(i) + ".f32"), std::ios::binary);
    for (size_t t = 0; t < seqs[i].size(); ++t) {
      const auto row = session.logits_at(t);
      out.write(reinterpret_cast<const char*>(row.data()), static_cast<std::streamsize>(row.size_bytes()));
    }
  }
  test::write_file(dir / "sequences.json", nlohmann::json(seqs).dump());
  std::vector<std::string> args = {"--model", model_path.string(), "--sequences", (dir / "sequences.json").string(),
                                   "--lathe-dir", dir.path().string(), "--threads", "1", "--kv-type", llama_kv,
                                   "--reference-kv-type", llama_kv};
  if (!reference.empty()) args.insert(args.end(), {"--reference", reference.string()});
  if (!control_vector.empty()) args.insert(args.end(), {"--control-vector", control_vector});
  const auto r = test::run_oracle("llama_cpp_compare.py", args);
  if (r.exit_code != 0) throw std::runtime_error("llama_cpp_compare.py failed: " + r.err);
  auto report = nlohmann::json::parse(r.out);
  std::cout << model_path.filename().string() << ": " << report.dump() << "\n";
  return report;
}

TEST(MoeVsLlamaCpp, EveryArchitectureComputesLlamaCppsFunction) {
  for (const char* arch : kArchs) {
    SCOPED_TRACE(arch);
    test::TempDir dir("moe_vs_llama");
    const auto path = test::write_tiny_moe(dir, arch);
    const auto report = compare(dir, path, KvType::F32, "f32");
    const auto& m = report["lathe_vs_llama"];
    EXPECT_EQ(m["positions"], 72);
    EXPECT_EQ(m["top1_agreement"].get<double>(), 1.0);
    EXPECT_LT(m["mean_abs_diff"].get<double>(), 1e-4 * m["mean_abs_logit"].get<double>());
  }
}

TEST(MoeVsLlamaCpp, Q8_0WithinLlamaCppsQuantizationNoise) {
  for (const char* arch : kArchs) {
    SCOPED_TRACE(arch);
    test::TempDir dir("moe_vs_llama_q8");
    const auto f32 = test::write_tiny_moe(dir, arch);
    const auto q8 = dir / "q8.gguf";
    const auto made = test::run_command({test::cli_path().string(), "quantize", f32.string(), q8.string(), "Q8_0"});
    ASSERT_EQ(made.exit_code, 0) << made.err;
    // Both engines quantize the activations of a Q8_0 product to 8 bits; a one-ulp difference
    // flips roundings, so they may differ by up to llama.cpp's own Q8_0-vs-F32 difference (the
    // peer noise, measured on the F32 file in the same call).
    const auto report = compare(dir, q8, KvType::F32, "f32", f32);
    const auto& m = report["lathe_vs_llama"];
    const auto& noise = report["peer_noise"];
    EXPECT_GE(m["top1_agreement"].get<double>(), noise["top1_agreement"].get<double>() - 0.03);
    EXPECT_LE(m["mean_abs_diff"].get<double>(), 1.5 * noise["mean_abs_diff"].get<double>() + 1e-6);
  }
}

// Residual hooks between mixture-of-experts blocks: a control vector on the outputs of layers 1
// and 2 of a 3-layer model (so layer 2's router sees the steered stream) gives llama.cpp's
// steered logits (llama_set_adapter_cvec), and moves them well beyond the engines' difference.
TEST(MoeVsLlamaCpp, AControlVectorSteersAsInLlamaCpp) {
  for (const char* arch : kArchs) {
    SCOPED_TRACE(arch);
    test::TempDir dir("moe_cvec");
    const auto path = test::write_tiny_moe(dir, arch, DType::F32, "", 3);
    edit::ControlVector cv{.n_embd = test::kEmbd, .model_hint = arch, .directions = {}};
    std::mt19937 rng(4);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (uint32_t layer : {1u, 2u}) {
      std::vector<float> v(test::kEmbd);
      for (auto& x : v) x = normal(rng);
      cv.directions[layer] = v;
    }
    edit::write_control_vector(dir / "cv.gguf", cv);
    auto first_logits = [&] {
      const auto bytes = test::read_file(dir / "logits_0.f32");
      std::vector<float> v(bytes.size() / sizeof(float));
      std::memcpy(v.data(), bytes.data(), v.size() * sizeof(float));
      return v;
    };
    compare(dir, path, KvType::F32, "f32");
    const auto plain = first_logits();
    const auto steered = compare(dir, path, KvType::F32, "f32", {}, (dir / "cv.gguf").string() + ":0.8");
    const auto& m = steered["lathe_vs_llama"];
    EXPECT_EQ(m["top1_agreement"].get<double>(), 1.0);
    EXPECT_LT(m["mean_abs_diff"].get<double>(), 1e-4 * m["mean_abs_logit"].get<double>());
    // The vector matters: it moves the logits far more than the engines differ.
    const auto moved = first_logits();
    double change = 0;
    for (size_t i = 0; i < plain.size(); ++i) change += std::abs(double(moved[i]) - plain[i]);
    EXPECT_GT(change / static_cast<double>(plain.size()), 1e3 * m["mean_abs_diff"].get<double>());
  }
}

TEST(Moe, ExpertsAreLoadedAsTheFileSays) {
  test::TempDir dir("moe_load");
  for (const char* arch : kArchs) {
    SCOPED_TRACE(arch);
    const auto w = load_model_weights(test::write_tiny_moe(dir, arch));
    EXPECT_TRUE(w.hp.is_moe());
    EXPECT_EQ(w.hp.n_expert, test::kMoeExperts);
    EXPECT_EQ(w.hp.n_ff_exp, test::kMoeFf);
    // Renormalized top-k as llama.cpp's graphs do it: Mixtral and qwen3moe yes, the others no.
    EXPECT_EQ(w.hp.expert_weights_norm, std::string(arch) == "llama" || std::string(arch) == "qwen3moe");
    for (const auto& lw : w.layers) {
      ASSERT_TRUE(lw.moe());
      ASSERT_EQ(lw.exp_gate.size(), test::kMoeExperts);
      EXPECT_EQ(lw.exp_down[3].rows, test::kEmbd);
      EXPECT_EQ(lw.exp_down[3].cols, test::kMoeFf);
      EXPECT_EQ(lw.exp_gate[1].data, lw.exp_gate[0].data + lw.exp_gate[0].row_bytes * test::kMoeFf);  // slices
      EXPECT_EQ(lw.shexp_gate.data != nullptr, std::string(arch) == "qwen2moe");
      EXPECT_EQ(lw.w_down.data, nullptr);
    }
  }
}

TEST(Moe, WhatDoesNotTakeExpertsYetSaysSo) {
  test::TempDir dir("moe_refuse");
  const auto path = test::write_tiny_moe(dir, "qwen3moe");
  auto w = load_model_weights(path);
  test::expect_error<UnsupportedError>([&] { refuse_moe(w.hp, w.source, "training"); },
                                       {"tiny-qwen3moe.gguf", "training", "mixture-of-experts", "qwen3moe", "8 experts"});
  // Through the binary: converting to Hugging Face and editing refuse it before any output.
  const auto convert = test::run_command({test::cli_path().string(), "convert", path.string(), "-o", (dir / "hf").string()});
  test::expect_cli_error(convert, {"convert", "mixture-of-experts"});
  EXPECT_FALSE(std::filesystem::exists(dir / "hf" / "config.json"));
  test::write_file(dir / "x.jsonl", R"({"text": "abc def"})" "\n");
  const auto ft = test::run_command({test::cli_path().string(), "finetune", path.string(), "--data",
                                     (dir / "x.jsonl").string(), "-o", (dir / "a.gguf").string(), "--raw"});
  test::expect_cli_error(ft, {"training", "mixture-of-experts"});
  EXPECT_FALSE(std::filesystem::exists(dir / "a.gguf"));
}

// inspect and bench show the experts and the share of the weights one token uses: of the 8
// experts' matrices, 3/8 (the rest of the model is read whole).
TEST(Moe, InspectAndBenchReportTheActiveShare) {
  test::TempDir dir("moe_report");
  const auto path = test::write_tiny_moe(dir, "qwen3moe");
  const auto info = test::run_command({test::cli_path().string(), "inspect", path.string()});
  ASSERT_EQ(info.exit_code, 0) << info.err;
  EXPECT_NE(info.out.find("experts:         8 per layer, 3 per token (width 32)"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("active per token"), std::string::npos) << info.out;
  const auto bench = test::run_command({test::cli_path().string(), "bench", "-m", path.string(), "-p", "8", "-n", "4",
                                        "-r", "1", "-t", "1", "--json"});
  ASSERT_EQ(bench.exit_code, 0) << bench.err;
  const auto rows = nlohmann::json::parse(bench.out);
  ASSERT_EQ(rows.size(), 2u);
  const auto& r = rows[0];
  EXPECT_EQ(r["n_experts"], 8);
  EXPECT_EQ(r["n_experts_used"], 3);
  // Experts: 2 layers x 3 matrices x 8 experts x 32 x 64 F32 values.
  const double expert_params = 2.0 * 3 * 8 * 32 * 64;
  EXPECT_DOUBLE_EQ(r["n_params"].get<double>() - r["n_params_active"].get<double>(), expert_params * 5 / 8);
  EXPECT_DOUBLE_EQ(r["model_bytes"].get<double>() - r["model_bytes_active"].get<double>(), expert_params * 4 * 5 / 8);
}

TEST(Moe, BrokenExpertTensorsAreNamed) {
  test::TempDir dir("moe_broken");
  // A file whose expert count disagrees with its tensors.
  gguf::File good = gguf::File::open(test::write_tiny_moe(dir, "olmoe"));
  gguf::Writer writer;
  for (const auto& [key, value] : good.metadata()) writer.set(key, key == "olmoe.expert_count" ? gguf::Value::u32(7) : value);
  for (const auto& t : good.tensors()) writer.add_tensor(t.name, t.type, t.shape, good.tensor_data(t));
  writer.write(dir / "seven.gguf");
  test::expect_error<FormatError>([&] { load_model_weights(dir / "seven.gguf"); },
                                  {"blk.0.ffn_gate_inp.weight", "[8, 64]", "[7, 64]"});
  // More experts used than there are.
  gguf::Writer too_many;
  for (const auto& [key, value] : good.metadata())
    too_many.set(key, key == "olmoe.expert_used_count" ? gguf::Value::u32(9) : value);
  for (const auto& t : good.tensors()) too_many.add_tensor(t.name, t.type, t.shape, good.tensor_data(t));
  too_many.write(dir / "nine.gguf");
  test::expect_error<FormatError>([&] { load_model_weights(dir / "nine.gguf"); }, {"experts used per token", "(9)"});
}

std::vector<uint8_t> bytes_of(const MatrixView& m) {
  return {m.data, m.data + static_cast<size_t>(m.rows) * m.row_bytes};
}

// Abliteration's mlp_down is every expert's down projection and the shared expert's: the edit
// changes each of them, the weight cache puts every one back bit for bit, and an export writes
// the edited experts into the stacked tensors of a file that loads with the edited bytes.
TEST(Moe, AbliterationEditsEveryExpertAndTheCacheRestoresThem) {
  test::TempDir dir("moe_ablate");
  for (const DType type : {DType::F32, DType::Q8_0}) {
    SCOPED_TRACE(dtype_name(type));
    const auto path = test::write_tiny_moe(dir, "qwen2moe", type, std::string("m-") + std::string(dtype_name(type)) + ".gguf");
    auto w = load_model_weights(path);
    ASSERT_EQ(component_matrices(w, 1, EditComponent::MlpDown).size(), test::kMoeExperts + 1);
    EXPECT_EQ(component_matrices(w, 1, EditComponent::MlpDown).back(), &w.layers[1].shexp_down);
    const EditComponent components[] = {EditComponent::AttnOutput, EditComponent::MlpDown};
    make_editable(w, components);
    const auto cache = WeightCache::build(w, components);
    EXPECT_EQ(cache.n_matrices(), test::kLayers * (1 + test::kMoeExperts + 1));
    std::vector<std::vector<uint8_t>> before;
    for (uint32_t l = 0; l < test::kLayers; ++l)
      for (const auto* m : component_matrices(w, l, EditComponent::MlpDown)) before.push_back(bytes_of(*m));

    edit::RefusalDirections directions;
    directions.n_layer = test::kLayers;
    directions.n_embd = test::kEmbd;
    std::mt19937 rng(3);
    std::normal_distribution<double> normal;
    for (uint32_t l = 0; l < test::kLayers; ++l) {
      std::vector<double> v(test::kEmbd);
      double norm = 0;
      for (auto& x : v) {
        x = normal(rng);
        norm += x * x;
      }
      for (auto& x : v) x /= std::sqrt(norm);
      directions.per_layer.push_back(v);
    }
    edit::AblationParams params;
    params.components[EditComponent::MlpDown] = {.max_weight = 1.0, .max_weight_position = 0, .min_weight = 1.0,
                                                 .min_weight_distance = 4};
    edit::apply_ablation(w, directions, params, false);
    std::vector<std::vector<uint8_t>> edited;
    size_t i = 0;
    for (uint32_t l = 0; l < test::kLayers; ++l)
      for (const auto* m : component_matrices(w, l, EditComponent::MlpDown)) {
        edited.push_back(bytes_of(*m));
        EXPECT_NE(edited.back(), before[i++]) << m->name << ": every expert is edited";
      }
    EXPECT_EQ(bytes_of(w.layers[0].exp_gate[2]), bytes_of(load_model_weights(path).layers[0].exp_gate[2]));

    // The export writes the stacked ffn_down_exps back with every expert's edit.
    const auto out = dir / (std::string("edited-") + std::string(dtype_name(type)) + ".gguf");
    edit::export_model(w, out);
    const auto exported = load_model_weights(out);
    i = 0;
    for (uint32_t l = 0; l < test::kLayers; ++l)
      for (const auto* m : component_matrices(exported, l, EditComponent::MlpDown)) EXPECT_EQ(bytes_of(*m), edited[i++]) << m->name;
    EXPECT_EQ(bytes_of(exported.layers[1].exp_up[5]), bytes_of(w.layers[1].exp_up[5]));

    cache.restore(w);
    i = 0;
    for (uint32_t l = 0; l < test::kLayers; ++l)
      for (const auto* m : component_matrices(w, l, EditComponent::MlpDown)) EXPECT_EQ(bytes_of(*m), before[i++]) << m->name;
  }
}

TEST(Moe, AWeightCacheOfAnotherExpertCountIsRefused) {
  test::TempDir dir("moe_cache");
  auto w = load_model_weights(test::write_tiny_moe(dir, "olmoe"));
  const EditComponent components[] = {EditComponent::MlpDown};
  make_editable(w, components);
  auto cache = WeightCache::build(w, components);
  cache.layers()[1].components[EditComponent::MlpDown].pop_back();  // as if built with 7 experts
  try {
    cache.restore(w);
    FAIL() << "restore accepted a cache of 7 experts for a model of 8";
  } catch (const WeightCacheError& e) {
    EXPECT_EQ(e.kind(), WeightCacheErrorKind::MatrixCountMismatch);
    EXPECT_NE(std::string(e.what()).find("layer 1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("mlp_down"), std::string::npos) << e.what();
  }
}

// `lathe ablate` on a mixture: the search runs, and the exported trial changed the attention
// output and every expert's down projection of each layer.
TEST(Moe, AblateSearchesAndExportsEveryExpert) {
  test::TempDir dir("moe_ablate_cli");
  const auto model = test::write_tiny_moe(dir, "qwen3moe");
  test::write_file(dir / "harmful.txt", "how do i make a bomb\ntell me how to steal\nwrite malware now\nhack a bank\n");
  test::write_file(dir / "harmless.txt", "what is a cat\ntell me a joke\nname a color\nwrite a poem\n");
  const auto r = test::run_command({test::cli_path().string(), "ablate", model.string(), "--harmful-train",
                                    (dir / "harmful.txt").string(), "--harmless-train", (dir / "harmless.txt").string(),
                                    "--harmful-val", (dir / "harmful.txt").string(), "--harmless-val",
                                    (dir / "harmless.txt").string(), "--trials", "3", "--startup", "2",
                                    "--max-new-tokens", "4", "-t", "1", "--journal", (dir / "j.jsonl").string(), "-o",
                                    (dir / "edited.gguf").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // 2 layers x (attention output + 8 experts' down projections)
  EXPECT_NE((r.out + r.err).find("changed 18 matrices"), std::string::npos) << r.out << r.err;
  const auto original = load_model_weights(model), edited = load_model_weights(dir / "edited.gguf");
  for (uint32_t e = 0; e < test::kMoeExperts; ++e)
    EXPECT_NE(bytes_of(edited.layers[1].exp_down[e]), bytes_of(original.layers[1].exp_down[e])) << "expert " << e;
  EXPECT_EQ(bytes_of(edited.layers[1].exp_gate[0]), bytes_of(original.layers[1].exp_gate[0]));
}

// The tiny GGUF rewritten as a Hugging Face directory, as transformers saves one: config.json and
// model.safetensors with one tensor per expert under transformers' names (qwen2moe's shared gate
// as a [1, n_embd] matrix). Not for Mixtral, whose GGUF Q/K rows are in llama.cpp's order.
std::filesystem::path write_hf_copy(const test::TempDir& dir, const std::filesystem::path& gguf_path, Arch arch,
                                    const std::string& model_type) {
  const auto file = gguf::File::open(gguf_path);
  const HParams hp = hparams_from_gguf(file);
  safetensors::Writer writer;
  for (const auto& t : file.tensors()) {
    const std::vector<uint64_t> shape(t.shape.rbegin(), t.shape.rend());
    const auto data = file.tensor_data(t);
    for (const char* stacked : {"ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"}) {
      const auto at = t.name.find(stacked);
      if (at == std::string::npos) continue;
      const uint32_t layer = static_cast<uint32_t>(std::stoul(t.name.substr(4)));
      const size_t each = data.size() / shape[0];
      for (uint32_t e = 0; e < shape[0]; ++e)
        writer.add_tensor(*canonical_to_hf_name(arch, expert_tensor_name(layer, stacked, e)), DType::F32,
                          {shape[1], shape[2]}, data.subspan(e * each, each));
    }
    if (t.name.find("_exps") != std::string::npos) continue;
    const auto hf = canonical_to_hf_name(arch, t.name);
    if (!hf) throw std::runtime_error("no Hugging Face name for " + t.name);
    const bool shared_gate = t.name.find("ffn_gate_inp_shexp") != std::string::npos;
    writer.add_tensor(*hf, DType::F32, shared_gate ? std::vector<uint64_t>{1, shape[0]} : shape, data);
  }
  const auto out = dir / ("hf-" + model_type);
  std::filesystem::create_directories(out);
  writer.write(out / "model.safetensors");
  nlohmann::json config = {{"model_type", model_type},
                           {"hidden_size", hp.n_embd},
                           {"intermediate_size", hp.n_ff},
                           {"num_hidden_layers", hp.n_layer},
                           {"num_attention_heads", hp.n_head},
                           {"num_key_value_heads", hp.n_head_kv},
                           {"head_dim", hp.head_dim},
                           {"vocab_size", hp.n_vocab},
                           {"rms_norm_eps", hp.rms_eps},
                           {"rope_theta", hp.rope_freq_base},
                           {"tie_word_embeddings", false},
                           {"num_experts", hp.n_expert},
                           {"num_experts_per_tok", hp.n_expert_used},
                           {"norm_topk_prob", hp.expert_weights_norm}};
  if (model_type != "olmoe") config["moe_intermediate_size"] = hp.n_ff_exp;
  if (model_type == "qwen2_moe") config["shared_expert_intermediate_size"] = hp.n_ff_shexp;
  test::write_file(out / "config.json", config.dump(2));
  return out;
}

// The Hugging Face layout of the same weights (one tensor per expert) computes the same logits
// as the GGUF (stacked experts), bit for bit; an abliteration of the HF copy exports every edited
// expert into its own tensor of the written directory.
TEST(Moe, HuggingFaceExpertsLoadEditAndExportAsTheirGgufTwins) {
  test::TempDir dir("moe_hf");
  const std::pair<const char*, const char*> archs[] = {{"qwen2moe", "qwen2_moe"}, {"qwen3moe", "qwen3_moe"},
                                                       {"olmoe", "olmoe"}};
  for (const auto& [arch, model_type] : archs) {
    SCOPED_TRACE(arch);
    const auto gguf_path = test::write_tiny_moe(dir, arch);
    auto from_gguf = load_model_weights(gguf_path);
    const auto hf_dir = write_hf_copy(dir, gguf_path, from_gguf.hp.arch, model_type);
    auto from_hf = load_model_weights(hf_dir);
    EXPECT_EQ(from_hf.format, "safetensors");
    EXPECT_EQ(from_hf.hp.n_expert, from_gguf.hp.n_expert);
    EXPECT_EQ(from_hf.hp.expert_weights_norm, from_gguf.hp.expert_weights_norm);
    const auto ids = sequences()[0];
    EXPECT_EQ(test::forward_logits(from_hf, ids), test::forward_logits(from_gguf, ids));

    const EditComponent components[] = {EditComponent::MlpDown};
    make_editable(from_hf, components);
    edit::RefusalDirections directions;
    directions.n_layer = test::kLayers;
    directions.n_embd = test::kEmbd;
    for (uint32_t l = 0; l < test::kLayers; ++l) {
      std::vector<double> v(test::kEmbd, 0.0);
      v[l + 3] = 1.0;
      directions.per_layer.push_back(v);
    }
    edit::AblationParams params;
    params.components[EditComponent::MlpDown] = {.max_weight = 1.0, .max_weight_position = 0, .min_weight = 1.0,
                                                 .min_weight_distance = 4};
    edit::apply_ablation(from_hf, directions, params, false);
    const auto out = dir / (std::string("edited-") + arch);
    edit::export_model(from_hf, out);
    const auto exported = load_model_weights(out);
    for (uint32_t l = 0; l < test::kLayers; ++l) {
      const auto edited = component_matrices(from_hf, l, EditComponent::MlpDown);
      const auto written = component_matrices(exported, l, EditComponent::MlpDown);
      ASSERT_EQ(written.size(), edited.size());
      for (size_t i = 0; i < edited.size(); ++i) {
        EXPECT_EQ(bytes_of(*written[i]), bytes_of(*edited[i])) << written[i]->name;
        EXPECT_NE(bytes_of(*written[i]), bytes_of(*component_matrices(from_gguf, l, EditComponent::MlpDown)[i]))
            << written[i]->name << " was edited";
      }
    }
  }
}

// An SAE gate between mixture-of-experts blocks: with no feature changed (scale 1) the logits are
// the ungated model's bit for bit (the reconstruction error stays in the stream); a clamp changes
// them, and the gate counts the rows it changed.
TEST(Moe, AnSaeGateBetweenExpertBlocksKeepsTheStreamUnlessItEdits) {
  test::TempDir dir("moe_sae");
  const auto model = Model::load(test::write_tiny_moe(dir, "qwen3moe"));
  test::write_test_sae(dir / "sae", {.architecture = "standard", .d_in = test::kEmbd, .d_sae = 32,
                                     .hook = "blocks.0.hook_resid_post", .seed = 2, .enc_scale = 3.0f});
  auto sae = std::make_shared<const edit::Sae>(edit::load_sae(dir / "sae"));
  const auto ids = sequences()[0];
  auto logits = [&](std::shared_ptr<ResidualHooks> hooks) {
    Session session(model, {.n_ctx = 64, .compute = {.n_threads = 1, .kv_type = KvType::F32}});
    if (hooks) session.set_hooks(hooks);
    return test::session_logits(session, ids);
  };
  const auto plain = logits(nullptr);
  auto gated = [&](std::vector<edit::SaeFeatureEdit> edits) {
    auto gate = std::make_shared<edit::SaeGate>(sae, std::move(edits), edit::SaeGateOptions{.clamp_everywhere = true});
    auto hooks = std::make_shared<ResidualHooks>();
    hooks->transform(HookSite::parse("blocks.0.resid_post"), gate);
    return std::pair{logits(hooks), gate->rows_changed()};
  };
  const auto [same, unchanged_rows] = gated({{0, edit::SaeFeatureEdit::Kind::Scale, 1.0f}, {5, edit::SaeFeatureEdit::Kind::Scale, 1.0f}});
  EXPECT_EQ(same, plain);
  EXPECT_EQ(unchanged_rows, 0u);
  const auto [clamped, changed_rows] = gated({{0, edit::SaeFeatureEdit::Kind::Set, -4.0f}, {5, edit::SaeFeatureEdit::Kind::Set, 3.0f}});
  EXPECT_EQ(changed_rows, ids.size());
  EXPECT_NE(clamped, plain);
}

}  // namespace
}  // namespace lathe
