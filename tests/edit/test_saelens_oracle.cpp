// SAELens itself (sae-lens with torch; tests/oracle/saelens_oracle.py) as the oracle of lathe's
// SAE files, both ways: an SAE trained by lathe (train API, written by write_sae as `lathe
// sae-train` writes it) loads in SAELens (SAE.load_from_disk) with lathe's encodings; SAEs that
// SAELens builds and saves (standard, jumprelu, topk) load in lathe with SAELens's encodings.
// Needs a Python where sae_lens and torch import: $LATHE_SAELENS_PYTHON, else
// <source>/.venv-peft/bin/python when it exists; skips otherwise (the CI machine has no torch).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "common/test_support.hpp"
#include "common/tiny_model.hpp"
#include "common/torch_peer.hpp"
#include "edit/sae.hpp"
#include "edit/sae_train.hpp"
#include "lathe/lathe.hpp"

namespace lathe::edit {
namespace {

namespace fs = std::filesystem;

test::CommandResult run(const std::string& python, std::vector<std::string> args) {
  args.insert(args.begin(), (test::source_dir() / "tests" / "oracle" / "saelens_oracle.py").string());
  args.insert(args.begin(), python);
  return test::run_command(args, std::chrono::seconds{300});
}

std::string saelens_python(std::string& why) {
  const std::string python = test::torch_peer_python("LATHE_SAELENS_PYTHON");
  if (python.empty()) {
    why = "no Python with sae_lens + torch: set LATHE_SAELENS_PYTHON (or create <source>/.venv-peft with them)";
    return "";
  }
  const auto r = run(python, {"check"});
  if (r.exit_code != 0) {
    why = python + " cannot run the SAELens oracle: " + r.err;
    return "";
  }
  return python;
}

std::vector<float> read_f32(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<float> v(fs::file_size(path) / sizeof(float));
  in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(float)));
  return v;
}

void write_f32(const fs::path& path, const std::vector<float>& v) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(float)));
}

// Features equal within 1e-5 of the row's largest; TopK rows whose k-th and (k+1)-th
// pre-activations nearly tie may pick differently in float32, and are counted, not compared.
void expect_same_features(const std::vector<float>& lathe, const std::vector<float>& oracle, int64_t d_sae,
                          const std::string& what) {
  ASSERT_EQ(lathe.size(), oracle.size()) << what;
  const size_t rows = lathe.size() / static_cast<size_t>(d_sae);
  size_t differing = 0;
  double worst = 0;
  for (size_t r = 0; r < rows; ++r) {
    double scale = 1e-6, diff = 0;
    for (int64_t j = 0; j < d_sae; ++j) {
      const size_t i = r * static_cast<size_t>(d_sae) + static_cast<size_t>(j);
      scale = std::max(scale, double(std::fabs(oracle[i])));
      diff = std::max(diff, double(std::fabs(lathe[i] - oracle[i])));
    }
    if (diff / scale > 1e-5) ++differing;
    else worst = std::max(worst, diff / scale);
  }
  EXPECT_EQ(differing, 0u) << what << ": rows whose features differ";
  std::cout << what << ": " << rows << " rows, worst relative difference " << worst << "\n";
}

TEST(SaeLensOracle, LatheTrainedSaeLoadsInSaeLensWithTheSameEncodings) {
  std::string why;
  const std::string python = saelens_python(why);
  if (python.empty()) GTEST_SKIP() << why;
  test::TempDir dir("saelens_oracle");
  test::TinyModel tiny;
  tiny.add_tokenizer();
  const auto model = Model::load(tiny.write(dir, "tiny.gguf"));
  std::vector<std::vector<TokenId>> sequences;
  for (int s = 0; s < 8; ++s) {
    std::vector<TokenId> ids(32);
    for (size_t t = 0; t < ids.size(); ++t) ids[t] = static_cast<TokenId>((s * 7 + t * 3) % test::kVocab);
    sequences.push_back(ids);
  }
  const auto rows = collect_rows(model, sequences, HookSite::parse("blocks.1.resid_post"), 1 << 20, {.n_threads = 1});
  const int64_t n = static_cast<int64_t>(rows.size()) / test::kEmbd;
  SaeTrainer trainer(rows.data(), n, test::kEmbd, {.d_sae = 96, .k = 6, .batch = 32, .steps = 100, .lr = 3e-3, .seed = 5});
  while (!trainer.done()) trainer.step();
  write_sae(trainer.sae("blocks.1.hook_resid_post"), dir / "sae", {{"model", "tiny"}});
  const Sae sae = load_sae(dir / "sae");
  write_f32(dir / "rows.f32", rows);
  const auto r = run(python, {"encode", (dir / "sae").string(), (dir / "rows.f32").string(), (dir / "out.f32").string()});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("\"architecture\": \"topk\""), std::string::npos) << r.out;
  expect_same_features(sae_encode(sae, rows.data(), n), read_f32(dir / "out.f32"), sae.d_sae, "lathe SAE in SAELens");
}

TEST(SaeLensOracle, SaeLensSavedSaesLoadInLatheWithTheSameEncodings) {
  std::string why;
  const std::string python = saelens_python(why);
  if (python.empty()) GTEST_SKIP() << why;
  test::TempDir dir("saelens_oracle");
  for (const std::string arch : {"standard", "jumprelu", "topk"}) {
    const auto out = dir / arch;
    const auto r = run(python, {"write", out.string(), arch, "64", "48", "5", "11"});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    const Sae sae = load_sae(out);
    EXPECT_EQ(sae_architecture_name(sae.architecture), arch);
    EXPECT_EQ(sae.hook_name, "blocks.1.hook_resid_post");
    const auto rows = read_f32(out / "rows.f32");
    expect_same_features(sae_encode(sae, rows.data(), static_cast<int64_t>(rows.size()) / 64), read_f32(out / "features.f32"),
                         sae.d_sae, "SAELens " + arch + " SAE in lathe");
  }
}

}  // namespace
}  // namespace lathe::edit
