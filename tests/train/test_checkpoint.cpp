// Checkpoints (train/checkpoint.hpp) and the step-wise runs: a run stopped, saved to a file, read
// back and resumed ends with the same adapters, bit for bit, as a run that never stopped (fine-
// tuning and unlearning, with several examples so that the example order matters); a checkpoint
// of another run, a damaged file or a state of the wrong shape is an error naming what differs.
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "common/test_support.hpp"
#include "common/tiny_model.hpp"
#include "lathe/error.hpp"
#include "train/checkpoint.hpp"
#include "train/finetune.hpp"
#include "train/unlearn.hpp"
#include "weights/model_weights.hpp"

namespace lathe::train {
namespace {

struct Tiny {
  test::TempDir dir{"checkpoint"};
  std::filesystem::path path;
  Tiny() {
    test::TinyModel tiny;
    tiny.add_tokenizer();
    path = tiny.write(dir, "tiny.gguf");
  }
};

std::vector<Example> facts() {
  return {{{3, 8, 15, 4, 22, 9, 1}, {-1, 15, 4, 22, 9, 1, -1}},
          {{5, 8, 2, 17, 6, 12}, {-1, 2, 17, 6, 12, -1}},
          {{7, 1, 1, 9}, {-1, 1, 9, 4}},
          {{2, 2, 6}, {-1, 6, 11}},
          {{12, 0, 3, 3, 5}, {-1, -1, 3, 5, 20}}};
}

FinetuneOptions options() {
  FinetuneOptions o;
  o.targets = {"attn_q", "attn_v", "ffn_down"};
  o.rank = 2;
  o.alpha = 4;
  o.adamw.lr = 1e-2;
  o.steps = 9;
  o.grad_accumulation = 2;
  o.warmup_steps = 2;
  o.decay = LrDecay::Cosine;
  o.seed = 3;
  return o;
}

void expect_same_adapters(const LoraSet<float>& a, const LoraSet<float>& b) {
  ASSERT_EQ(a.pairs.size(), b.pairs.size());
  for (size_t p = 0; p < a.pairs.size(); ++p) {
    EXPECT_EQ(a.pairs[p].a, b.pairs[p].a) << p;  // bit for bit
    EXPECT_EQ(a.pairs[p].b, b.pairs[p].b) << p;
  }
}

TEST(Checkpoint, ResumedFinetuningEqualsAnUninterruptedRun) {
  Tiny tiny;
  const auto w = load_model_weights(tiny.path);
  const auto data = facts();
  const auto straight = finetune(w, data, options());

  FinetuneRun first(w, data, options());
  for (int i = 0; i < 4; ++i) first.step();
  const auto file = tiny.dir / "run.ckpt";
  write_checkpoint(file, {first.state(), {{"lr", 0.01}}});
  const auto read = read_checkpoint(file);
  EXPECT_EQ(read.settings, (nlohmann::json{{"lr", 0.01}}));
  EXPECT_EQ(read.state.step, 4);
  FinetuneRun second(w, data, options());
  second.restore(read.state);
  EXPECT_EQ(second.steps_done(), 4);
  while (!second.done()) second.step();
  expect_same_adapters(second.lora(), straight);

  // Without the optimizer's moments or the example order the run would differ: a restored run
  // whose order is reset does not reproduce (so the test can tell).
  auto state = read.state;
  state.cycles[0] = FinetuneRun(w, data, options()).state().cycles[0];
  FinetuneRun reset(w, data, options());
  reset.restore(state);
  while (!reset.done()) reset.step();
  EXPECT_NE(reset.lora().pairs[0].b, straight.pairs[0].b);
}

// -t only changes the speed: the runs' sums have one order whatever the thread count, so a
// checkpoint can be resumed with other threads (and the settings leave them out).
TEST(Checkpoint, ThreadCountDoesNotChangeTheAdapters) {
  Tiny tiny;
  const auto w = load_model_weights(tiny.path);
  auto one = options(), three = options();
  one.n_threads = 1;
  three.n_threads = 3;
  expect_same_adapters(finetune(w, facts(), one), finetune(w, facts(), three));
}

TEST(Checkpoint, ResumedUnlearningEqualsAnUninterruptedRun) {
  Tiny tiny;
  const auto w = load_model_weights(tiny.path);
  const auto all = facts();
  const std::vector<Example> forget(all.begin(), all.begin() + 2), retain(all.begin() + 2, all.end());
  for (auto retain_loss : {RetainLoss::Nll, RetainLoss::Kl}) {
    UnlearnOptions o;
    o.train = options();
    o.objective = Objective::Npo;
    o.retain_loss = retain_loss;
    const auto straight = unlearn(w, forget, retain, o);
    UnlearnRun first(w, forget, retain, o);
    for (int i = 0; i < 5; ++i) first.step();
    write_checkpoint(tiny.dir / "u.ckpt", {first.state(), {}});
    UnlearnRun second(w, forget, retain, o);
    second.restore(read_checkpoint(tiny.dir / "u.ckpt").state);
    while (!second.done()) second.step();
    expect_same_adapters(second.lora(), straight);
    // A fine-tuning state does not fit an unlearning run (one example order, not two).
    FinetuneRun finetuning(w, forget, o.train);
    EXPECT_THROW(second.restore(finetuning.state()), InvalidArgumentError);
  }
}

TEST(Checkpoint, ForeignOrDamagedCheckpointsAreErrors) {
  Tiny tiny;
  const auto w = load_model_weights(tiny.path);
  const auto data = facts();
  FinetuneRun run(w, data, options());
  run.step();
  const auto state = run.state();

  auto other = options();
  other.rank = 3;
  FinetuneRun wider(w, data, other);
  try {
    wider.restore(state);
    ADD_FAILURE() << "no error";
  } catch (const InvalidArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("rank 2"), std::string::npos) << e.what();
  }
  const std::vector<Example> fewer(data.begin(), data.begin() + 3);
  FinetuneRun smaller(w, fewer, options());
  EXPECT_THROW(smaller.restore(state), InvalidArgumentError);  // the order is over 5 examples

  EXPECT_THROW(read_checkpoint(tiny.dir / "none.ckpt"), NotFoundError);
  test::write_file(tiny.dir / "junk.ckpt", "not a checkpoint");
  EXPECT_THROW(read_checkpoint(tiny.dir / "junk.ckpt"), FormatError);
  // A safetensors file that is not a checkpoint (a PEFT-like file without the metadata).
  write_checkpoint(tiny.dir / "good.ckpt", {state, {}});
  auto bytes = test::read_file(tiny.dir / "good.ckpt");
  const auto at = bytes.find("lathe.checkpoint");
  ASSERT_NE(at, std::string::npos);
  bytes[at] = 'L';
  test::write_file(tiny.dir / "renamed.ckpt", bytes);
  try {
    read_checkpoint(tiny.dir / "renamed.ckpt");
    ADD_FAILURE() << "no error";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("not a lathe training checkpoint"), std::string::npos) << e.what();
  }
}

TEST(Checkpoint, SettingsDifferencesNameEveryChangedKey) {
  const nlohmann::json saved = {{"lr", 0.01}, {"steps", 9}, {"seed", 3}};
  EXPECT_TRUE(settings_differences(saved, saved).empty());
  const auto diff = settings_differences(saved, {{"lr", 0.02}, {"steps", 9}, {"rank", 4}});
  ASSERT_EQ(diff.size(), 3u);
  EXPECT_EQ(diff[0], "lr: 0.01 -> 0.02");
  EXPECT_EQ(diff[1], "rank: (absent) -> 4");
  EXPECT_EQ(diff[2], "seed: 3 -> (absent)");
}

}  // namespace
}  // namespace lathe::train
