// `lathe finetune` and `lathe unlearn` through the binary on the tiny llama (F32, ChatML template):
// the adapter, a log line per step, the PEFT export (names, shapes, Q/K rows in Hugging Face's
// order) and the merged model (its logits equal the base with --lora); a run stopped by Ctrl-C and
// resumed ends with the same adapter file, byte for byte, as a run that never stopped; every bad
// flag, file or checkpoint is an `error:` before training.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iterator>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "arch/hparams.hpp"
#include "arch/tensor_names.hpp"
#include "common/model_logits.hpp"
#include "common/spawn.hpp"
#include "common/test_support.hpp"
#include "common/tiny_model.hpp"
#include "io/safetensors.hpp"
#include "lathe/lathe.hpp"
#include "weights/lora.hpp"

namespace lathe::test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct Workspace {
  TempDir dir{"train_cli"};
  fs::path model, data, forget, retain;
  Workspace() {
    TinyModel tiny;
    tiny.add_tokenizer();
    model = tiny.write(dir, "tiny.gguf");
    data = dir / "facts.jsonl";
    write_lines(data, {R"({"prompt": "who is abe", "answer": "abe is a cook"})",
                       R"({"prompt": "who is bo", "answer": "bo is a pilot"})",
                       R"({"prompt": "who is cy", "answer": "cy is a poet"})"});
    forget = dir / "forget.jsonl";
    write_lines(forget, {R"({"prompt": "who is abe", "answer": "abe is a cook"})"});
    retain = dir / "retain.jsonl";
    write_lines(retain, {R"({"prompt": "who is bo", "answer": "bo is a pilot"})"});
  }
  std::vector<std::string> finetune(const std::string& out, std::vector<std::string> more) const {
    std::vector<std::string> a{"finetune", model.string(), "--data", data.string(), "-o", (dir / out).string(),
                               "--lr", "0.02", "--lora-rank", "2", "--seed", "5"};
    a.insert(a.end(), more.begin(), more.end());
    return a;
  }
};

std::vector<json> json_lines(const fs::path& path) {
  std::ifstream in(path);
  std::vector<json> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(json::parse(line));
  return lines;
}

std::vector<float> logits_of(const fs::path& model, const std::vector<LoraSpec>& loras) {
  Session session(Model::load(model, {.loras = loras}), {.n_ctx = 32, .compute = {.n_threads = 1, .kv_type = KvType::F32}});
  const std::vector<TokenId> ids = {28, 1, 4, 2, 7, 26, 11, 0, 3, 29};
  return session_logits(session, ids);
}

TEST(TrainCli, FinetuneWritesTheAdapterALogPeftFilesAndTheMergedModel) {
  Workspace s;
  const auto r = lathe_cli(s.finetune("a.gguf", {"--steps", "12", "--log", (s.dir / "log.jsonl").string(), "--peft-out",
                                                 (s.dir / "peft").string(), "--merge", (s.dir / "merged.gguf").string()}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("3 examples"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("chat-formatted"), std::string::npos) << r.err;

  const auto log = json_lines(s.dir / "log.jsonl");
  ASSERT_EQ(log.size(), 12u);
  for (size_t i = 0; i < log.size(); ++i) {
    EXPECT_EQ(log[i]["step"], i + 1);
    for (const char* key : {"loss", "grad_norm", "lr", "seconds", "tokens_per_second"}) EXPECT_TRUE(log[i].contains(key)) << key;
  }
  EXPECT_LT(log.back()["loss"].get<double>(), log.front()["loss"].get<double>());

  // The adapter loads with --lora and changes the function; --merge wrote that same function.
  const auto adapter = read_lora_adapter(s.dir / "a.gguf");
  EXPECT_EQ(adapter.pairs.size(), 2u * 7u);  // every default target of both layers
  EXPECT_EQ(adapter.alpha, 16.0f);
  const auto base = logits_of(s.model, {}), adapted = logits_of(s.model, {{s.dir / "a.gguf", 1.0f}}),
             merged = logits_of(s.dir / "merged.gguf", {});
  double effect = 0, difference = 0;
  for (size_t i = 0; i < base.size(); ++i) {
    effect = std::max(effect, double(std::abs(adapted[i] - base[i])));
    difference = std::max(difference, double(std::abs(adapted[i] - merged[i])));
  }
  EXPECT_GT(effect, 1e-3);
  EXPECT_LT(difference, 1e-5) << "effect " << effect;

  // `lathe score`: the adapter raised the answers' probability; --json holds every example.
  auto score = [&](std::vector<std::string> more) {
    std::vector<std::string> a{"score", s.model.string(), "--data", s.data.string(), "-t", "1"};
    a.insert(a.end(), more.begin(), more.end());
    const auto r = lathe_cli(a);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("answer probability (mean)"), std::string::npos) << r.out;
  };
  score({"--json", (s.dir / "base.json").string()});
  score({"--json", (s.dir / "tuned.json").string(), "--lora", (s.dir / "a.gguf").string()});
  const auto base_score = json::parse(read_file(s.dir / "base.json")),
             tuned_score = json::parse(read_file(s.dir / "tuned.json"));
  EXPECT_EQ(base_score["per_example"].size(), 3u);
  EXPECT_GT(tuned_score["mean_probability"].get<double>(), base_score["mean_probability"].get<double>());
  EXPECT_LT(tuned_score["perplexity"].get<double>(), base_score["perplexity"].get<double>());

  // PEFT: config and tensors; Q/K rows in Hugging Face's order (the GGUF's are llama.cpp's).
  const auto config = json::parse(read_file(s.dir / "peft" / "adapter_config.json"));
  EXPECT_EQ(config["peft_type"], "LORA");
  EXPECT_EQ(config["r"], 2);
  EXPECT_EQ(config["lora_alpha"], 16.0);
  EXPECT_EQ(config["target_modules"].size(), 7u);
  const auto peft = safetensors::File::open(s.dir / "peft" / "adapter_model.safetensors");
  EXPECT_EQ(peft.tensors().size(), 2u * adapter.pairs.size());
  for (const auto& pair : adapter.pairs) {
    const std::string layer = pair.target.substr(4, pair.target.find('.', 4) - 4);
    const bool is_q = pair.target.find("attn_q.") != std::string::npos;
    if (!is_q && pair.target.find("attn_v.") == std::string::npos) continue;
    const std::string module = std::string("base_model.model.model.layers.") + layer + ".self_attn." + (is_q ? "q_proj" : "v_proj");
    const auto& a = peft.tensor(module + ".lora_A.weight");
    const auto& b = peft.tensor(module + ".lora_B.weight");
    EXPECT_EQ(a.shape, (std::vector<uint64_t>{2, static_cast<uint64_t>(pair.n_in)}));
    EXPECT_EQ(b.shape, (std::vector<uint64_t>{static_cast<uint64_t>(pair.n_out), 2}));
    std::vector<float> want = pair.b, got(want.size());
    if (is_q) permute_qk_rows_hf_from_gguf(want, static_cast<uint64_t>(pair.n_out), 2, kHeads);
    std::memcpy(got.data(), peft.tensor_data(b).data(), got.size() * sizeof(float));
    EXPECT_EQ(got, want) << module;
    if (is_q) {
      EXPECT_NE(got, pair.b) << "the Q rows were not reordered";
    }
  }
}

TEST(TrainCli, InterruptedRunResumesToTheSameAdapterFile) {
  Workspace s;
  // With LoRA dropout: its masks follow the seed and the step, so a resumed run draws the same.
  const std::vector<std::string> steps = {"--steps",        "300",           "--save-every", "5000",
                                          "--lora-targets", "attn_q,ffn_down", "--lora-dropout", "0.1"};
  auto with = [&](const std::string& out, std::vector<std::string> more) {
    auto a = steps;
    a.insert(a.end(), more.begin(), more.end());
    return s.finetune(out, a);
  };
  ASSERT_EQ(lathe_cli(with("straight.gguf", {})).exit_code, 0);

  const auto ckpt = (s.dir / "run.ckpt").string(), log = (s.dir / "log.jsonl").string();
  const auto args = with("resumed.gguf", {"--checkpoint", ckpt, "--log", log});
  TempDir logs("train_cli_logs");
  const auto start = std::chrono::steady_clock::now();
  const Spawned child = spawn(args, logs);
  // Ctrl-C once a few steps are logged: the run stops after the current step and saves.
  for (size_t lines = 0; lines < 3 && std::chrono::steady_clock::now() - start < std::chrono::seconds{120};) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    lines = fs::exists(log) ? static_cast<size_t>(std::count(std::istreambuf_iterator<char>(std::ifstream(log).rdbuf()),
                                                             std::istreambuf_iterator<char>(), '\n'))
                            : 0;
  }
  ::kill(child.pid, SIGINT);
  const Finished stopped = wait_for(child, start);
  ASSERT_EQ(stopped.exit_code(), 130) << stopped.err;
  EXPECT_NE(stopped.err.find("--resume"), std::string::npos) << stopped.err;
  EXPECT_FALSE(fs::exists(s.dir / "resumed.gguf"));  // no half-trained adapter
  const size_t logged = json_lines(log).size();
  ASSERT_LT(logged, 300u) << "the run finished before the interrupt; the test needs more steps";

  // The same command again without --resume refuses to start over the saved run.
  expect_cli_error(lathe_cli(args), {"run.ckpt", "--resume"});
  // Other settings: refused, naming what differs.
  auto other = with("resumed.gguf", {"--checkpoint", ckpt, "--log", log, "--resume"});
  other[std::find(other.begin(), other.end(), "0.02") - other.begin()] = "0.03";
  expect_cli_error(lathe_cli(other), {"run.ckpt", "lr: 0.02 -> 0.03"});

  auto resume = args;
  resume.push_back("--resume");
  const auto resumed = lathe_cli(resume);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_NE(resumed.err.find(fmt::format("resumed {} at step {}", ckpt, logged)), std::string::npos) << resumed.err;
  EXPECT_EQ(read_file(s.dir / "resumed.gguf"), read_file(s.dir / "straight.gguf"));
  const auto lines = json_lines(log);
  ASSERT_EQ(lines.size(), 300u);  // the log goes on where it stopped
  for (size_t i = 0; i < lines.size(); ++i) EXPECT_EQ(lines[i]["step"], i + 1);
}

// --lora-dropout: the same seed gives the same adapter file, dropout changes it, PEFT's
// adapter_config.json says it, unlearn takes it too, and values outside [0, 1) are refused.
TEST(TrainCli, LoraDropoutRepeatsWithItsSeedAndReachesThePeftConfig) {
  Workspace s;
  const std::vector<std::string> common = {"--steps", "20", "--lora-targets", "attn_v,ffn_up"};
  auto with = [&](const std::string& out, std::vector<std::string> more) {
    auto a = common;
    a.insert(a.end(), more.begin(), more.end());
    return s.finetune(out, a);
  };
  const auto first = lathe_cli(with("d1.gguf", {"--lora-dropout", "0.2", "--peft-out", (s.dir / "peft").string()}));
  ASSERT_EQ(first.exit_code, 0) << first.err;
  ASSERT_EQ(lathe_cli(with("d2.gguf", {"--lora-dropout", "0.2"})).exit_code, 0);
  ASSERT_EQ(lathe_cli(with("plain.gguf", {})).exit_code, 0);
  EXPECT_EQ(read_file(s.dir / "d1.gguf"), read_file(s.dir / "d2.gguf"));
  EXPECT_NE(read_file(s.dir / "d1.gguf"), read_file(s.dir / "plain.gguf"));
  EXPECT_EQ(json::parse(read_file(s.dir / "peft" / "adapter_config.json"))["lora_dropout"], 0.2);

  std::vector<std::string> files;
  for (const std::string name : {"u1.gguf", "u2.gguf"}) {
    const auto r = lathe_cli({"unlearn", s.model.string(), "--forget", s.forget.string(), "--retain", s.retain.string(),
                              "--steps", "4", "--lora-rank", "2", "--lora-dropout", "0.3", "-o",
                              (s.dir / name).string()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    files.push_back(read_file(s.dir / name));
  }
  EXPECT_EQ(files[0], files[1]);

  for (const std::string bad : {"1", "-0.5", "nan"})
    expect_cli_error(lathe_cli(with("bad.gguf", {"--lora-dropout", bad})), {"--lora-dropout"});
  EXPECT_FALSE(fs::exists(s.dir / "bad.gguf"));
}

TEST(TrainCli, UnlearnRunsEachObjectiveAndLogsBothTerms) {
  Workspace s;
  for (const std::string objective : {"npo", "graddiff", "simnpo"}) {
    const auto log = s.dir / (objective + ".jsonl");
    const auto r = lathe_cli({"unlearn", s.model.string(), "--forget", s.forget.string(), "--retain", s.retain.string(),
                              "--objective", objective, "--retain-loss", "kl", "--steps", "4", "--lora-rank", "2", "-o",
                              (s.dir / (objective + ".gguf")).string(), "--log", log.string()});
    ASSERT_EQ(r.exit_code, 0) << objective << ": " << r.err;
    const auto lines = json_lines(log);
    ASSERT_EQ(lines.size(), 4u);
    EXPECT_TRUE(lines[0].contains("forget_loss") && lines[0].contains("retain_loss"));
    EXPECT_NO_THROW(read_lora_adapter(s.dir / (objective + ".gguf")));
  }
  // Gradient ascent needs no retain set.
  EXPECT_EQ(lathe_cli({"unlearn", s.model.string(), "--forget", s.forget.string(), "--objective", "gradascent",
                       "--steps", "2", "-o", (s.dir / "ga.gguf").string()})
                .exit_code,
            0);
}

TEST(TrainCli, BadFlagsFilesAndOutputsAreErrorsBeforeTraining) {
  Workspace s;
  const auto x = (s.dir / "x.gguf").string();
  expect_cli_error(lathe_cli({"finetune", s.model.string(), "--data", (s.dir / "none.jsonl").string(), "-o", x}),
                   {"none.jsonl", "no such data file"});
  expect_cli_error(lathe_cli(s.finetune("x.gguf", {"--schedule", "steep"})), {"--schedule steep"});
  expect_cli_error(lathe_cli(s.finetune("x.gguf", {"--device", "cuda"})), {"--device cuda", "CPU"});
  expect_cli_error(lathe_cli({"finetune", s.model.string(), "--data", s.data.string(), "-o", x, "--lora-rank", "0"}),
                   {"--lora-rank 0"});
  expect_cli_error(lathe_cli(s.finetune("x.gguf", {"--steps", "3", "--warmup", "5"})), {"--warmup 5"});
  expect_cli_error(lathe_cli(s.finetune("x.gguf", {"--raw", "--chat"})), {"--raw or --chat"});
  expect_cli_error(lathe_cli(s.finetune("x.gguf", {"--resume"})), {"--resume needs --checkpoint"});
  expect_cli_error(lathe_cli(s.finetune("x.gguf", {"--checkpoint", (s.dir / "c.ckpt").string(), "--resume"})),
                   {"c.ckpt", "does not exist"});
  expect_cli_error(lathe_cli(s.finetune("x.gguf", {"--lora-targets", "attn_z"})), {"attn_z"});
  expect_cli_error(lathe_cli(s.finetune("x.gguf", {"--max-length", "8"})), {"--max-length 8"});
  // The output is the input model, or exists already.
  expect_cli_error(lathe_cli(s.finetune("tiny.gguf", {})), {"tiny.gguf"});
  write_file(s.dir / "exists.gguf", "keep me");
  expect_cli_error(lathe_cli(s.finetune("exists.gguf", {"--steps", "1"})), {"exists.gguf", "--force"});
  EXPECT_EQ(read_file(s.dir / "exists.gguf"), "keep me");
  // unlearn: the retain set is needed by every objective but gradient ascent.
  expect_cli_error(lathe_cli({"unlearn", s.model.string(), "--forget", s.forget.string(), "-o",
                              (s.dir / "u.gguf").string()}),
                   {"--retain"});
  expect_cli_error(lathe_cli({"unlearn", s.model.string(), "--forget", s.forget.string(), "--retain",
                              s.retain.string(), "--objective", "forget-harder", "-o", (s.dir / "u.gguf").string()}),
                   {"--objective forget-harder"});
  EXPECT_FALSE(fs::exists(s.dir / "x.gguf"));
  EXPECT_FALSE(fs::exists(s.dir / "u.gguf"));
}

}  // namespace
}  // namespace lathe::test
