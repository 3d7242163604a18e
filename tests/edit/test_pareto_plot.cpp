// The Pareto SVG plot and the progress bar: the report side of `lathe ablate`.
#include "edit/pareto_plot.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstring>
#include <sstream>

#include "common/test_support.hpp"
#include "edit/progress.hpp"
#include "lathe/error.hpp"

namespace lathe::edit {
namespace {

using test::read_file;
using test::TempDir;

size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

// Minimal XML well-formedness: tags nest and close in order, attribute values are quoted, and
// text holds no raw '<' or stray '&' (every '&' starts one of the five entities).
::testing::AssertionResult well_formed(const std::string& xml) {
  std::vector<std::string> open;
  for (size_t i = 0; i < xml.size();) {
    if (xml[i] == '&') {
      bool entity = false;
      for (const char* e : {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;"}) entity |= xml.compare(i, std::strlen(e), e) == 0;
      if (!entity) return ::testing::AssertionFailure() << "bare & at " << i;
      ++i;
      continue;
    }
    if (xml[i] != '<') {
      if (xml[i] == '>') return ::testing::AssertionFailure() << "bare > at " << i;
      ++i;
      continue;
    }
    size_t end = i + 1;
    bool in_quotes = false;
    while (end < xml.size() && (in_quotes || xml[end] != '>')) {
      if (xml[end] == '"') in_quotes = !in_quotes;
      if (in_quotes && xml[end] == '<') return ::testing::AssertionFailure() << "raw < in attribute at " << end;
      ++end;
    }
    if (end >= xml.size()) return ::testing::AssertionFailure() << "unterminated tag at " << i;
    const std::string tag = xml.substr(i + 1, end - i - 1);
    const std::string name = tag.substr(tag[0] == '/' ? 1 : 0, tag.find_first_of(" />", 1) - (tag[0] == '/' ? 1 : 0));
    if (tag[0] == '?') {
    } else if (tag[0] == '/') {
      if (open.empty() || open.back() != name) return ::testing::AssertionFailure() << "mismatched </" << name << ">";
      open.pop_back();
    } else if (tag.back() != '/') {
      open.push_back(name);
    }
    i = end + 1;
  }
  if (!open.empty()) return ::testing::AssertionFailure() << "unclosed <" << open.back() << ">";
  return ::testing::AssertionSuccess();
}

Trial point(int number, std::vector<double> values) {
  Trial t;
  t.number = number;
  t.values = std::move(values);
  return t;
}

TEST(ParetoSvg, DrawsAllTrialsAndHighlightsTheFront) {
  TempDir dir("svg");
  const std::vector<Trial> trials = {point(0, {0.9, 0.1}), point(1, {0.5, 0.5}), point(2, {}), point(3, {0.6, 0.6}),
                                     point(4, {0.1, 0.9}), point(5, {0.8, 0.8}), point(16, {0.3, 0.55})};
  const auto front = pareto_front(trials);
  ASSERT_EQ(front, (std::vector<size_t>{4, 6, 1, 0}));
  const auto out = dir / "front.svg";
  write_pareto_svg(out, trials, front, "refusal <rate> & co", "KL \"divergence\"", "Study 'x' <test>");
  const std::string svg = read_file(out);
  EXPECT_EQ(svg.rfind("<?xml", 0), 0u);
  EXPECT_NE(svg.find("<svg xmlns=\"http://www.w3.org/2000/svg\""), std::string::npos);
  EXPECT_TRUE(well_formed(svg));
  // Escaped labels, never raw.
  EXPECT_NE(svg.find("refusal &lt;rate&gt; &amp; co"), std::string::npos);
  EXPECT_NE(svg.find("KL &quot;divergence&quot;"), std::string::npos);
  EXPECT_NE(svg.find("Study &apos;x&apos; &lt;test&gt;"), std::string::npos);
  EXPECT_EQ(svg.find("<rate>"), std::string::npos);
  // 6 completed grey dots + 4 red ones, each front point labelled with its trial number.
  EXPECT_EQ(count(svg, "<circle"), 10u);
  for (int number : {4, 16, 1, 0}) EXPECT_NE(svg.find(fmt::format(">#{}</text>", number)), std::string::npos) << number;
  for (int number : {2, 3, 5}) EXPECT_EQ(svg.find(fmt::format(">#{}</text>", number)), std::string::npos) << number;
  EXPECT_NE(svg.find("<title>trial 16: 0.3, 0.55</title>"), std::string::npos);
  // One staircase through the four front points: a move, then 3 x (horizontal, vertical).
  EXPECT_EQ(count(svg, "<path"), 1u);
  const size_t d = svg.find("d=\"M");
  ASSERT_NE(d, std::string::npos);
  const std::string path = svg.substr(d, svg.find('"', d + 3) - d);
  EXPECT_EQ(count(path, " H"), 3u) << path;
  EXPECT_EQ(count(path, " V"), 3u) << path;
  // Axis ticks: x and y span ~0.06..0.94, so 0.2 and 0.8 are ticks on both axes.
  EXPECT_GE(count(svg, ">0.2</text>"), 2u);
  EXPECT_GE(count(svg, ">0.8</text>"), 2u);
  // Written atomically: no temporary file is left behind.
  size_t files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) files += entry.is_regular_file();
  EXPECT_EQ(files, 1u);
}

TEST(ParetoSvg, EmptyStudyAndBadInput) {
  TempDir dir("svg");
  write_pareto_svg(dir / "empty.svg", {point(0, {})}, {}, "x", "y", "t");
  const std::string svg = read_file(dir / "empty.svg");
  EXPECT_TRUE(well_formed(svg));
  EXPECT_NE(svg.find("no completed trials"), std::string::npos);
  // One point (flat ranges) still plots.
  write_pareto_svg(dir / "one.svg", {point(7, {0.0, 2.0})}, {0}, "x", "y", "t");
  EXPECT_TRUE(well_formed(read_file(dir / "one.svg")));
  EXPECT_NE(read_file(dir / "one.svg").find(">#7</text>"), std::string::npos);

  try {
    write_pareto_svg(dir / "bad.svg", {point(3, {1.0})}, {}, "x", "y", "t");
    FAIL() << "no exception";
  } catch (const InvalidArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("trial 3"), std::string::npos) << e.what();
  }
  EXPECT_THROW(write_pareto_svg(dir / "bad.svg", {point(0, {1.0, 2.0})}, {1}, "x", "y", "t"), InvalidArgumentError);
  EXPECT_THROW(write_pareto_svg(dir / "bad.svg", {point(0, {})}, {0}, "x", "y", "t"), InvalidArgumentError);
  EXPECT_FALSE(std::filesystem::exists(dir / "bad.svg"));
  EXPECT_THROW(write_pareto_svg(dir / "missing" / "x.svg", {}, {}, "x", "y", "t"), IoError);
}

TEST(ParetoSvg, NiceTicks) {
  auto expect_ticks = [](const std::vector<double>& got, const std::vector<double>& want) {
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-12) << i;
  };
  expect_ticks(detail::nice_ticks(0.0, 1.0, 5), {0.0, 0.2, 0.4, 0.6, 0.8, 1.0});  // raw step 0.2
  expect_ticks(detail::nice_ticks(-3.7, 42.0, 6), {0, 10, 20, 30, 40});           // raw step 7.6 -> 10
  expect_ticks(detail::nice_ticks(0.013, 0.041, 6), {0.015, 0.02, 0.025, 0.03, 0.035, 0.04});  // 0.0047 -> 0.005
  EXPECT_EQ(detail::nice_ticks(1.0, 1.0, 5), (std::vector<double>{1.0}));
}

// ---------------------------------------------------------------- progress bar

struct FakeClock {
  std::chrono::steady_clock::time_point now{};
  void advance(double seconds) {
    now += std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(seconds));
  }
  ProgressBar::Clock clock() {
    return [this] { return now; };
  }
};

TEST(ProgressBar, NonTtyPrintsOneLinePerUpdateForSmallTotals) {
  FakeClock clock;
  std::ostringstream out;
  ProgressBar bar("ablate", 10, out, false, clock.clock());
  bar.update(0, "starting");
  clock.advance(12);
  bar.update(1, "trial 0: refusals 0.4\nkl 0.1");  // 12 s per trial, 9 left -> 108 s
  clock.advance(108);
  bar.update(10, "");
  bar.finish();
  bar.finish();  // idempotent
  EXPECT_EQ(out.str(),
            "ablate [....................] 0/10 ETA -- starting\n"
            "ablate [##..................] 1/10 ETA 1m48s trial 0: refusals 0.4 kl 0.1\n"
            "ablate [####################] 10/10 ETA 0s\n"
            "ablate [####################] 10/10 in 2m00s\n");
}

// A resumed loop: 40 of 100 steps were done by an earlier process; this one takes 3 s a step, so
// after 2 more steps 58 remain at 3 s (2m54s), not 58 at 6 s / 42 steps (8 s).
TEST(ProgressBar, ResumedLoopExtrapolatesFromTheStepsSinceTheResume) {
  FakeClock clock;
  std::ostringstream out;
  ProgressBar bar("steps", 100, out, false, clock.clock());
  clock.advance(30);  // loading before the loop: not part of the rate
  bar.resume_at(40);
  bar.update(40, "resumed");
  clock.advance(6);
  bar.update(42, "");
  EXPECT_EQ(out.str(),
            "steps [########............] 40/100 ETA -- resumed\n"
            "steps [########............] 42/100 ETA 2m54s\n");
}

TEST(ProgressBar, NonTtyThrottlesLargeTotalsToOneLineEveryTwoSeconds) {
  FakeClock clock;
  std::ostringstream out;
  ProgressBar bar("eval", 1000, out, false, clock.clock());
  bar.update(1, "a");  // first update: shown
  for (size_t done = 2; done <= 20; ++done) {
    clock.advance(0.1);
    bar.update(done, "b");  // 1.9 s in total: none shown
  }
  clock.advance(0.1);
  bar.update(21, "c");  // 2 s since the last shown line
  clock.advance(0.5);
  bar.update(1000, "d");  // the end is always shown
  const std::string text = out.str();
  EXPECT_EQ(count(text, "\n"), 3u) << text;
  EXPECT_NE(text.find("1/1000 ETA --"), std::string::npos) << text;  // no time has passed yet
  EXPECT_NE(text.find("21/1000 ETA 1m33s c\n"), std::string::npos) << text;  // 2 s / 21 * 979 = 93.2 s
  EXPECT_NE(text.find("1000/1000 ETA 0s d\n"), std::string::npos) << text;
  EXPECT_EQ(text.find("2/1000"), std::string::npos) << text;
}

TEST(ProgressBar, TtyRedrawsInPlace) {
  FakeClock clock;
  std::ostringstream out;
  ProgressBar bar("run", 4, out, true, clock.clock());
  bar.update(0, "long status text");
  clock.advance(3);
  bar.update(1, "x");
  bar.update(2, "yy");
  bar.finish();
  const std::string first = "run [....................] 0/4 ETA -- long status text";
  const std::string second = "run [#####...............] 1/4 ETA 9s x";
  const std::string third = "run [##########..........] 2/4 ETA 3s yy";
  const std::string last = "run [##########..........] 2/4 in 3s yy";  // the last status stays
  EXPECT_EQ(out.str(), "\r" + first + "\r" + second + std::string(first.size() - second.size(), ' ') + "\r" + third +
                           "\r" + last + " \n");
}

TEST(ProgressBar, FormatsDurations) {
  EXPECT_EQ(ProgressBar::format_duration(0), "0s");
  EXPECT_EQ(ProgressBar::format_duration(59.4), "59s");
  EXPECT_EQ(ProgressBar::format_duration(192), "3m12s");
  EXPECT_EQ(ProgressBar::format_duration(7500), "2h05m");
  EXPECT_EQ(ProgressBar::format_duration(-5), "0s");
}

}  // namespace
}  // namespace lathe::edit
