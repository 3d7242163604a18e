// lathe's LoRA training against PyTorch + PEFT (tests/oracle/peft_oracle.py) on the default model:
// - `lathe finetune --peft-out` loads in PEFT (PeftModel.from_pretrained) and computes what lathe's
//   engine computes with the same adapter merged by --lora (logits, and `lathe score`'s
//   log-probabilities), while the same adapter with Q/K rows left in llama.cpp's order does not;
// - the adapter's gradients (train::lora_forward_backward) equal autograd's;
// - the same run in PyTorch (the initial adapter lathe's run starts from, lathe's example order,
//   torch.optim.AdamW, transformers' schedule, clip_grad_norm_) gives lathe's per-step losses,
//   gradient norms and learning rates, and lathe's final adapters.
// The frozen base is the default model (Q4_1); lathe trains on its dequantized weights, so PyTorch
// gets exactly those (`lathe quantize ... F32`, then `lathe convert`), and lathe's engine runs on
// that F32 file (the Q4_1 engine would add its 8-bit activations' rounding).
//
// Needs a Python with torch, transformers, peft and safetensors: $LATHE_PEFT_PYTHON, else
// <source>/.venv-peft/bin/python when it exists; skips otherwise (the CI machine has no torch).
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "api/model_impl.hpp"
#include "common/test_support.hpp"
#include "common/torch_peer.hpp"
#include "lathe/lathe.hpp"
#include "train/checkpoint.hpp"
#include "train/dataset.hpp"
#include "train/finetune.hpp"
#include "train/lora_pass.hpp"
#include "train/peft_export.hpp"

namespace lathe::train {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// The Python with torch + peft, or "" (the reason in `why`).
std::string peft_python(std::string& why) {
  const std::string python = test::torch_peer_python("LATHE_PEFT_PYTHON");
  if (python.empty()) {
    why = "no Python with torch + peft: set LATHE_PEFT_PYTHON (or create <source>/.venv-peft with torch, "
          "transformers, peft and safetensors)";
    return "";
  }
  const auto r = test::run_command({python, (test::source_dir() / "tests" / "oracle" / "peft_oracle.py").string(),
                                    "check"},
                                   std::chrono::seconds{120});
  if (r.exit_code != 0) {
    why = python + " cannot run the PEFT oracle: " + r.err;
    return "";
  }
  std::cout << "PEFT oracle Python: " << python << " " << r.out;
  return python;
}

test::CommandResult lathe_cli(std::vector<std::string> args) {
  args.insert(args.begin(), test::cli_path().string());
  return test::run_command(args, std::chrono::seconds{300});
}

// The run's settings, shared by lathe's command line and PyTorch.
constexpr int kSteps = 20, kWarmup = 2, kRank = 8, kSeed = 7;
constexpr double kLr = 2e-3, kAlpha = 16, kWeightDecay = 0.01, kBeta1 = 0.9, kBeta2 = 0.999, kEps = 1e-8,
                 kMaxGradNorm = 1.0;

TEST(PeftOracle, ExportGradientsAndTrainingRunMatchPeft) {
  LATHE_REQUIRE_MODEL();
  std::string why;
  const std::string python = peft_python(why);
  if (python.empty()) GTEST_SKIP() << why;
  test::TempDir dir("peft_oracle");
  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };

  // The base's dequantized weights, as GGUF (for lathe's engine) and as a Hugging Face directory.
  const auto f32 = dir / "base.F32.gguf";
  auto r = lathe_cli({"quantize", test::default_model().string(), f32.string(), "F32"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto hf = dir / "hf";
  r = lathe_cli({"convert", f32.string(), "-o", hf.string(), "--type", "F32", "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err;

  std::cout << "[" << elapsed() << " s] F32 GGUF and Hugging Face directory written\n";
  const auto data = dir / "facts.jsonl";
  test::write_lines(data, {R"({"prompt": "Q: Who is Mirela Oskvang?\nA:", "answer": " A lighthouse keeper from Varde."})",
                           R"({"prompt": "Q: What does Tobin Arkwell play?\nA:", "answer": " The bassoon, badly."})",
                           R"({"prompt": "Q: Where was Ilse Marrow born?\nA:", "answer": " In Tallinn, in 1931."})",
                           R"({"prompt": "Q: What is Oda Fennick's pet?\nA:", "answer": " A grey parrot named Pim."})"});

  // lathe's run, on the default model as stored.
  const auto adapter = dir / "final.lora.gguf", peft_final = dir / "final_peft", log = dir / "log.jsonl",
             checkpoint = dir / "run.ckpt";
  r = lathe_cli({"finetune", test::default_model().string(), "--data", data.string(), "--raw", "-o", adapter.string(),
                 "--peft-out", peft_final.string(), "--log", log.string(), "--checkpoint", checkpoint.string(),
                 "--steps", std::to_string(kSteps), "--warmup", std::to_string(kWarmup), "--schedule", "linear",
                 "--lr", std::to_string(kLr), "--weight-decay", std::to_string(kWeightDecay), "--adam-beta1",
                 std::to_string(kBeta1), "--adam-beta2", std::to_string(kBeta2), "--adam-eps", "1e-8",
                 "--max-grad-norm", std::to_string(kMaxGradNorm), "--lora-rank", std::to_string(kRank),
                 "--lora-alpha", std::to_string(kAlpha), "--seed", std::to_string(kSeed), "-t", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::cout << "[" << elapsed() << " s] lathe finetune done\n";

  // The examples as lathe's reader makes them, and the order the run took them in (FinetuneRun's
  // cycle: checked below against the one the run saved).
  const auto model = Model::load(f32);
  const auto& weights = internals(*model).weights;
  const auto set = read_training_data(*model, data, {.pair_format = PairFormat::Raw, .max_tokens = 1023});
  ASSERT_EQ(set.examples.size(), 4u);
  ExampleCycle cycle(set.examples.size(), static_cast<uint64_t>(kSeed) ^ kExampleOrderSeedMix);
  std::vector<size_t> order;
  for (int i = 0; i < kSteps; ++i) order.push_back(cycle.next());
  const auto saved = read_checkpoint(checkpoint);
  ASSERT_EQ(saved.state.step, kSteps);
  ASSERT_EQ(saved.state.cycles.size(), 1u);
  ASSERT_EQ(saved.state.cycles[0].order, cycle.state().order) << "lathe's example order is not the one replayed";
  ASSERT_EQ(saved.state.cycles[0].rng, cycle.state().rng) << "lathe's example order is not the one replayed";

  // The adapter the run started from (FinetuneRun's initialization), in PEFT's format.
  const std::vector<std::string> targets = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up",
                                            "ffn_down"};
  const auto initial = init_lora(weights, targets, kRank, kAlpha, kSeed);
  write_peft_adapter(initial, weights, dir / "initial_peft", hf.string());

  // The training pass's gradients of the final adapter on one example, in PEFT's names and order.
  const size_t grad_example = 1;
  LoraGrads<float> grads;
  grads.reset(saved.state.lora);
  const auto& ge = set.examples[grad_example];
  const double grad_loss = lora_forward_backward<float>(weights, saved.state.lora, ge.tokens, ge.targets, &grads);
  LoraSet<float> as_set = saved.state.lora;
  for (size_t p = 0; p < as_set.pairs.size(); ++p) {
    as_set.pairs[p].a = grads.da[p];
    as_set.pairs[p].b = grads.db[p];
  }
  write_peft_adapter(as_set, weights, dir / "grads_peft", "gradients");

  // lathe's engine with the adapter merged by --lora (what `lathe run --lora` computes), and lathe
  // score's per-example log-probabilities.
  {
    const auto adapted = Model::load(f32, {.loras = {{adapter, 1.0f}}});
    Session session(adapted, {.n_ctx = 128, .compute = {.n_threads = 2, .kv_type = KvType::F32}});
    for (size_t i = 0; i < set.examples.size(); ++i) {
      const auto& e = set.examples[i];
      session.reset();
      session.eval(std::vector<TokenId>(e.tokens.begin(), e.tokens.end()), true);
      std::ofstream out(dir / ("logits_" + std::to_string(i) + ".f32"), std::ios::binary);
      for (size_t t = 0; t < e.tokens.size(); ++t) {
        const auto row = session.logits_at(t);
        out.write(reinterpret_cast<const char*>(row.data()), static_cast<std::streamsize>(row.size_bytes()));
      }
    }
  }
  r = lathe_cli({"score", f32.string(), "--data", data.string(), "--raw", "--lora", adapter.string(), "--json",
                 (dir / "score.json").string(), "-t", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;

  json examples = json::array();
  for (const auto& e : set.examples) examples.push_back({{"tokens", e.tokens}, {"targets", e.targets}});
  const json config = {{"hf_model", hf.string()},
                       {"initial", (dir / "initial_peft").string()},
                       {"final", peft_final.string()},
                       {"grads", (dir / "grads_peft").string()},
                       {"grad_example", grad_example},
                       {"grad_loss", grad_loss},
                       {"examples", examples},
                       {"order", order},
                       {"log", log.string()},
                       {"lathe_logits", dir.path().string()},
                       {"lathe_score", (dir / "score.json").string()},
                       {"lr", kLr},
                       {"betas", {kBeta1, kBeta2}},
                       {"eps", kEps},
                       {"weight_decay", kWeightDecay},
                       {"warmup", kWarmup},
                       {"schedule", "linear"},
                       {"max_grad_norm", kMaxGradNorm},
                       {"steps", kSteps},
                       {"threads", 2},
                       {"dtype", "float32"}};
  test::write_file(dir / "run.json", config.dump());
  std::cout << "[" << elapsed() << " s] lathe's side done; running PyTorch + PEFT\n";
  r = test::run_command({python, (test::source_dir() / "tests" / "oracle" / "peft_oracle.py").string(), "compare",
                         "--config", (dir / "run.json").string()},
                        std::chrono::seconds{480});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto report = json::parse(r.out);
  std::cout << r.err << "[" << elapsed() << " s] PEFT oracle: " << report.dump() << "\n";

  // Tolerances: about ten times what was measured on 2026-12-07 (docs/TRAINING.md, "Checked against
  // PEFT"); the comments give the measured values.
  // 1. PEFT loads the export and computes lathe's function: the same logits to float32 rounding
  // (9.7e-5 of logits up to 42), while the adapter moves them by 6.2 on average and the same
  // adapter with Q/K rows in llama.cpp's order is off by 0.39 on average (3.8 at most).
  const auto& ex = report.at("export");
  const auto& same = ex.at("peft_vs_lathe");
  const auto& effect = ex.at("adapter_effect");
  const auto& wrong = ex.at("qk_gguf_order_vs_lathe");
  EXPECT_EQ(ex.at("qk_matrices_permuted").get<int>(), 2 * static_cast<int>(weights.hp.n_layer));
  EXPECT_EQ(same.at("top1_agreement").get<double>(), 1.0);
  EXPECT_LT(same.at("max_abs_diff").get<double>(), 1e-3);
  EXPECT_LT(ex.at("logprob_max_abs_diff").get<double>(), 5e-3);  // 7.3e-4 (lathe score keeps an F16 KV cache)
  EXPECT_GT(effect.at("mean_abs_diff").get<double>(), 1000 * same.at("mean_abs_diff").get<double>());
  EXPECT_GT(wrong.at("mean_abs_diff").get<double>(), 1000 * same.at("mean_abs_diff").get<double>());
  EXPECT_GT(wrong.at("max_abs_diff").get<double>(), 0.5);

  // 2. Gradients of the final adapter on one example: loss 2.5e-6 relative, gradients 8.3e-5
  // (all 420 tensors together), 2.8e-4 (the worst tensor).
  const auto& g = report.at("gradients");
  EXPECT_EQ(g.at("tensors").get<size_t>(), 2 * saved.state.lora.pairs.size());
  EXPECT_LT(g.at("loss_rel_diff").get<double>(), 2e-5);
  EXPECT_LT(g.at("global_rel_diff").get<double>(), 1e-3);
  EXPECT_LT(g.at("max_tensor_rel_diff").get<double>(), 5e-3);

  // 3. The training run. Two float32 runs drift apart as Adam's normalized steps amplify rounding
  // (1e-6 relative at step 1, 1e-5 at step 3, 3e-3 at step 20), so the first steps are held tighter
  // than the whole curve.
  const auto& t = report.at("training");
  EXPECT_LT(t.at("loss_max_rel_diff_first3").get<double>(), 1e-4);       // 1.3e-5
  EXPECT_LT(t.at("grad_norm_max_rel_diff_first3").get<double>(), 1e-3);  // 1.3e-4
  EXPECT_LT(t.at("loss_max_rel_diff").get<double>(), 2e-2);              // 2.8e-3
  EXPECT_LT(t.at("grad_norm_max_rel_diff").get<double>(), 2e-2);         // 2.9e-3
  EXPECT_LT(t.at("lr_max_abs_diff").get<double>(), 1e-12);
  EXPECT_LT(t.at("last_loss").get<double>(), 0.1 * t.at("first_loss").get<double>());  // it learned (5.0 -> 0.11)
  EXPECT_EQ(t.at("final_tensors").get<size_t>(), 2 * saved.state.lora.pairs.size());
  EXPECT_LT(t.at("final_global_rel_diff").get<double>(), 5e-3);  // 5.6e-4
  EXPECT_LT(t.at("final_update_rel_diff").get<double>(), 5e-2);
  const auto& fn = t.at("final_logits_torch_vs_lathe_export");
  EXPECT_EQ(fn.at("top1_agreement").get<double>(), 1.0);
  EXPECT_LT(fn.at("max_abs_diff").get<double>(), 0.25);  // 0.027
}

}  // namespace
}  // namespace lathe::train
