// Differential testing of lathe's tokenizer against HF `tokenizers` (tests/oracle/tokenize_oracle.py):
// a corpus of hard cases plus seeded random strings from mixed Unicode blocks, encoded by both in
// one oracle call, compared id for id.
#pragma once

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <cstdio>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "common/test_support.hpp"
#include "tokenizer/tokenizer.hpp"
#include "tokenizer/unicode.hpp"

namespace lathe::test {

inline std::string utf8(char32_t cp) {
  std::string out;
  tokenizer::append_utf8(out, cp);
  return out;
}

inline std::string fmt_hex(uint32_t value, const char* prefix) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%X", value);
  return std::string(prefix) + buf;
}

// Printable rendering of a test string for failure messages.
inline std::string escape_text(const std::string& text, size_t max_chars = 300) {
  std::string out;
  size_t chars = 0;
  for (size_t pos = 0; pos < text.size() && chars < max_chars; ++chars) {
    const auto byte = static_cast<uint8_t>(text[pos]);
    size_t len = tokenizer::utf8_sequence_length(text, pos);
    if (len == 0) {
      out += fmt_hex(byte, "\\x");
      ++pos;
      continue;
    }
    const char32_t cp = tokenizer::decode_code_point(text, pos, len);
    if (cp == '\\') out += "\\\\";
    else if (cp == '\n') out += "\\n";
    else if (cp == '\t') out += "\\t";
    else if (cp == '\r') out += "\\r";
    else if (cp >= 0x20 && cp < 0x7F) out.push_back(static_cast<char>(cp));
    else out += fmt_hex(cp, "\\u{") + "}";
    pos += len;
  }
  if (chars >= max_chars) out += "...(" + std::to_string(text.size()) + " bytes)";
  return "\"" + out + "\"";
}

inline std::string ids_to_string(const std::vector<int32_t>& ids) {
  std::string out = "[";
  for (size_t i = 0; i < ids.size(); ++i) out += (i ? ", " : "") + std::to_string(ids[i]);
  return out + "]";
}

// Hard cases every vocabulary must get right.
inline std::vector<std::string> hard_case_corpus(const std::vector<std::string>& special_strings) {
  std::vector<std::string> corpus = {
      "", " ", "  ", "   ", "\t", "\n", "\r\n", " \n ", "\n\n\n", "a  b   c    d", "  leading", "trailing  ",
      "tab\tsep\t\tdouble", "mixed \t\n \r\n\t end", "line1\nline2\r\nline3\rline4", "\u00a0nbsp\u00a0 \u3000ideo",
      "x \u2028\u2028 y", "a\u0085b", "a \u0085 b", "\v\f", "a\x1c b",
      "Hello, world!", "HELLO WORLD", "The quick brown fox jumps over the lazy dog.",
      "it's I'm you're we've they'll he'd don't", "IT'S I'M YOU'RE WE'VE THEY'LL HE'D DON'T",
      "'s 'S 't 'T 're 'RE 'Re 've 'VE 'm 'M 'll 'LL 'Ll 'd 'D", "x's y'S z'll Z'LL", "'ſ 'ſx A'ſ \u017f",
      "rock 'n' roll", "''''", "'", "abc'", "ﬆ ﬁ ﬂ", "Ⅻ ⅷ ² ³ ½ ①",
      "ф's ф'S", "3'll", " 's", "\n's",
      "naïve café résumé", "e\u0301 a\u0308 o\u0302\u0323", "\u1e9b\u0323", "Å Å", "한국어 텍스트", "\u1100\u1161\u11a8",
      "日本語のテキスト、カタカナ。", "中文文本测试，标点符号！", "Привет, мир! Ёлка", "Здравствуйте'S",
      "नमस्ते दुनिया", "क्षत्रिय", "ភាសាខ្មែរ", "សួស្តី ពិភពលោក", "ไทย ภาษา", "עברית", "العربية ٠١٢٣٤٥٦٧٨٩",
      "Ελληνικά", "ქართული", "Հայերեն",
      "😀😃😄 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️ ☺︎ 1️⃣ 🇫🇷🇩🇪", "👩🏿‍💻x", "\u200d\u200d", "a\ufe0fb",
      "\u200b zero\u200bwidth", "\ufeffBOM", "\U0001F600\U0001F600", "\U00010348 gothic", "\U0001D400 math",
      "(){}[]<>!@#$%^&*_-+=|\\/:;\"',.?~`", "...", "---", "!!!???", "a.b,c;d", "<|fake|>", "< |im_start| >",
      "http://example.com/path?q=1&r=2#frag", "foo@bar.com", "C++ std::vector<int>", "def f(x):\n    return x**2\n",
      "    indented code", "\t\tif (a) {\n\t\t\treturn;\n\t\t}", "\xef\xbf\xbd replacement", "\xc2\x80\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf",
      // invalid UTF-8 (replaced by U+FFFD on both sides)
      "\xff", "a\xc3", "\xc3(", "\xe2\x82", "\xed\xa0\x80", "\xf0\x9f\x98", "\xc0\xaf", "ok\xfe\xffok", "\xf5\x80\x80\x80",
  };
  std::string digits;
  for (int n = 1; n <= 20; ++n) {
    digits = std::string(static_cast<size_t>(n), '0');
    for (int i = 0; i < n; ++i) digits[static_cast<size_t>(i)] = static_cast<char>('1' + (i * 7 + n) % 9);
    corpus.push_back(digits);
    corpus.push_back("x" + digits + "y " + digits + ".5");
  }
  corpus.push_back("3.14159 2,718 1e10 0x1F -42 +7 1_000_000 ١٢٣ १२३ １２３");
  corpus.push_back(std::string(10000, 'a'));
  std::string long_word;
  for (int i = 0; i < 2500; ++i) long_word += "abćd";
  corpus.push_back(long_word);
  corpus.push_back(std::string(10000, ' '));
  corpus.push_back(std::string(5000, '\n') + "x");
  std::string long_cjk;
  for (int i = 0; i < 3000; ++i) long_cjk += utf8(0x4E00 + static_cast<char32_t>(i * 37 % 20000));
  corpus.push_back(long_cjk);
  for (const std::string& special : special_strings) {
    corpus.push_back(special);
    corpus.push_back("Hello " + special + " world");
    corpus.push_back("x" + special + special + "y");
    corpus.push_back(" " + special + "\n" + special.substr(0, special.size() / 2));
    corpus.push_back("<" + special + ">");
  }
  return corpus;
}

// Seeded random strings drawn from mixed Unicode blocks.
// Every prompt of data/prompts/*_train.jsonl (natural English text, ~2,260 lines).
inline std::vector<std::string> natural_prompt_corpus() {
  std::vector<std::string> out;
  for (const char* file : {"harmful_train.jsonl", "harmless_train.jsonl"}) {
    std::istringstream lines(read_file(shared_data_dir() / "prompts" / file));
    for (std::string line; std::getline(lines, line);)
      if (!line.empty()) out.push_back(nlohmann::json::parse(line).at("prompt").get<std::string>());
  }
  return out;
}

inline std::vector<std::string> random_corpus(size_t count, uint32_t seed, const std::vector<std::string>& special_strings) {
  struct Block {
    char32_t first, last;
    int weight;
  };
  static const Block blocks[] = {
      {0x20, 0x7E, 40},     {0x30, 0x39, 10},     {0x41, 0x5A, 8},      {0x09, 0x0D, 4},      {0x20, 0x20, 15},
      {0xA0, 0xFF, 4},      {0x100, 0x17F, 3},    {0x300, 0x36F, 3},    {0x370, 0x3FF, 2},    {0x400, 0x4FF, 4},
      {0x5D0, 0x5EA, 1},    {0x620, 0x64A, 2},    {0x660, 0x669, 1},    {0x900, 0x97F, 3},    {0x966, 0x96F, 1},
      {0xE01, 0xE3A, 1},    {0x1780, 0x17DD, 2},  {0x17E0, 0x17E9, 1},  {0x1100, 0x11FF, 1},  {0x2000, 0x206F, 2},
      {0x2070, 0x209C, 1},  {0x20A0, 0x20C0, 1},  {0x2150, 0x218B, 1},  {0x2190, 0x21FF, 1},  {0x2460, 0x24FF, 1},
      {0x3000, 0x303F, 2},  {0x3041, 0x3096, 2},  {0x30A0, 0x30FF, 2},  {0x4E00, 0x9FFF, 5},  {0xAC00, 0xD7A3, 3},
      {0xFF01, 0xFF5E, 1},  {0xFE00, 0xFE0F, 1},  {0x200D, 0x200D, 2},  {0x1F300, 0x1F5FF, 2}, {0x1F600, 0x1F64F, 3},
      {0x1F3FB, 0x1F3FF, 1}, {0x1F900, 0x1F9FF, 1}, {0x10000, 0x1000B, 1}, {0x1D400, 0x1D44F, 1}, {0x85, 0x85, 1},
  };
  static const char* fragments[] = {"'s", "'S", "'t", "'re", "'RE", "'ve", "'m", "'ll", "'LL", "'d", "'D", " the", "ing",
                                    "\n\n", "\r\n", "  ", "\t", "...", "123456789", "e\u0301"};
  int total_weight = 0;
  for (const Block& b : blocks) total_weight += b.weight;
  std::mt19937 rng(seed);
  std::vector<std::string> out;
  out.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    const int length = (i % 50 == 49) ? static_cast<int>(rng() % 300) : static_cast<int>(rng() % 40);
    std::string text;
    for (int c = 0; c < length; ++c) {
      const uint32_t roll = rng() % 100;
      if (roll < 6) {
        text += fragments[rng() % std::size(fragments)];
        continue;
      }
      if (roll < 7 && !special_strings.empty()) {
        text += special_strings[rng() % special_strings.size()];
        continue;
      }
      int pick = static_cast<int>(rng() % static_cast<uint32_t>(total_weight));
      const Block* block = &blocks[0];
      for (const Block& b : blocks) {
        if (pick < b.weight) {
          block = &b;
          break;
        }
        pick -= b.weight;
      }
      text += utf8(block->first + static_cast<char32_t>(rng() % (block->last - block->first + 1)));
    }
    out.push_back(std::move(text));
  }
  return out;
}

struct OracleResult {
  std::vector<int32_t> ids, ids_text;
  std::string decoded, nfc;
  std::vector<std::string> tokens;   // HF's token strings of `ids`
  std::vector<int32_t> ids_special;  // encode(add_special_tokens=True)
};

// Runs the oracle once over all texts. `source_args` is {"--tokenizer-json", path} or {"--gguf", path}.
inline std::vector<OracleResult> run_tokenize_oracle(const std::vector<std::string>& source_args,
                                                     const std::vector<std::string>& texts) {
  TempDir dir("tokenize_oracle");
  nlohmann::json input = nlohmann::json::array();
  for (const std::string& text : texts) {
    std::string hex;
    for (char c : text) {
      char buf[3];
      std::snprintf(buf, sizeof(buf), "%02x", static_cast<uint8_t>(c));
      hex += buf;
    }
    input.push_back(hex);
  }
  write_file(dir / "in.json", input.dump());
  std::vector<std::string> args = source_args;
  args.push_back((dir / "in.json").string());
  args.push_back((dir / "out.json").string());
  const CommandResult result = run_oracle("tokenize_oracle.py", args);
  if (result.exit_code != 0) {
    ADD_FAILURE() << "tokenize_oracle.py failed (" << result.exit_code << "): " << result.err;
    return {};
  }
  const nlohmann::json output = nlohmann::json::parse(read_file(dir / "out.json"));
  std::vector<OracleResult> results;
  for (const auto& item : output)
    results.push_back({item.at("ids").get<std::vector<int32_t>>(), item.at("ids_text").get<std::vector<int32_t>>(),
                       item.at("decoded").get<std::string>(), item.at("nfc").get<std::string>(),
                       item.at("tokens").get<std::vector<std::string>>(), item.at("ids_special").get<std::vector<int32_t>>()});
  return results;
}

// Compares lathe with the oracle on `texts`; reports up to 10 mismatches per kind.
inline void expect_same_as_oracle(const tokenizer::Tokenizer& tok, const std::vector<std::string>& source_args,
                                  const std::vector<std::string>& texts, bool roundtrip_nfc) {
  const std::vector<OracleResult> expected = run_tokenize_oracle(source_args, texts);
  ASSERT_EQ(expected.size(), texts.size());
  size_t id_mismatches = 0, text_mismatches = 0, decode_mismatches = 0, roundtrip_failures = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    const auto ids = tok.encode(texts[i], {.add_special = false, .parse_special = true});
    if (ids != expected[i].ids && ++id_mismatches <= 10)
      ADD_FAILURE() << "encode mismatch (parse_special) for " << escape_text(texts[i]) << "\n  lathe: " << ids_to_string(ids)
                    << "\n  HF:    " << ids_to_string(expected[i].ids);
    const auto ids_text = tok.encode(texts[i], {.add_special = false, .parse_special = false});
    if (ids_text != expected[i].ids_text && ++text_mismatches <= 10)
      ADD_FAILURE() << "encode mismatch (no parse_special) for " << escape_text(texts[i]) << "\n  lathe: "
                    << ids_to_string(ids_text) << "\n  HF:    " << ids_to_string(expected[i].ids_text);
    const std::string decoded = tokenizer::bytes_to_text(tok.decode(expected[i].ids_text));
    if (decoded != expected[i].decoded && ++decode_mismatches <= 10)
      ADD_FAILURE() << "decode mismatch for ids of " << escape_text(texts[i]) << "\n  lathe: " << escape_text(decoded)
                    << "\n  HF:    " << escape_text(expected[i].decoded);
    // decode(encode(x)) == x, modulo U+FFFD replacement of invalid input and NFC where the
    // vocabulary normalizes (expected text from Python's unicodedata, not from lathe).
    const std::string original = roundtrip_nfc ? expected[i].nfc : tokenizer::bytes_to_text(texts[i]);
    if (decoded != original && ++roundtrip_failures <= 10)
      ADD_FAILURE() << "decode(encode(x)) != x for " << escape_text(texts[i]) << "\n  got: " << escape_text(decoded);
  }
  EXPECT_EQ(id_mismatches, 0u) << "of " << texts.size() << " texts";
  EXPECT_EQ(text_mismatches, 0u) << "of " << texts.size() << " texts";
  EXPECT_EQ(decode_mismatches, 0u) << "of " << texts.size() << " texts";
  EXPECT_EQ(roundtrip_failures, 0u) << "of " << texts.size() << " texts";
}

inline std::vector<std::string> special_strings_of(const tokenizer::Tokenizer& tok, size_t max = 12) {
  std::vector<std::string> out;
  for (const auto& added : tok.vocab().added_tokens) {
    if (out.size() >= max) break;
    out.push_back(added.content);
  }
  return out;
}

}  // namespace lathe::test
