// `lathe tokenize` and `lathe detokenize`: text <-> token ids with a model's tokenizer.
// MODEL is a GGUF file, a model directory, or a directory/file with tokenizer.json.
#include <fmt/format.h>

#include <memory>
#include <string>
#include <vector>

#include "cli/commands.hpp"
#include "lathe/error.hpp"
#include "tokenizer/tokenizer.hpp"

namespace lathe::cli {

namespace {

// JSON-style quoting so that pieces with spaces, newlines or control bytes stay readable.
std::string quote(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') out += std::string("\\") + c;
    else if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\r') out += "\\r";
    else if (byte < 0x20 || byte == 0x7F) out += fmt::format("\\x{:02x}", byte);
    else out.push_back(c);
  }
  return out + "\"";
}

}  // namespace

Runner add_tokenize(CLI::App& app) {
  struct Options {
    std::string model, text;
    bool ids = false, pieces = false, no_special = false;
  };
  auto opts = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("tokenize", "Print the token ids (or pieces) of TEXT");
  cmd->add_option("-m,--model", opts->model, "GGUF file, model directory, or tokenizer.json")->required();
  auto* ids = cmd->add_flag("--ids", opts->ids, "print ids on one line (default)");
  cmd->add_flag("--pieces", opts->pieces, "print one token per line: id, piece text, decoded bytes")->excludes(ids);
  cmd->add_flag("--no-special", opts->no_special,
                "treat special-token strings in TEXT as plain text and add no BOS/EOS");
  cmd->add_option("text", opts->text, "text to tokenize")->required();
  return [opts]() -> int {
    const auto tok = tokenizer::Tokenizer::from_path(opts->model);
    const tokenizer::EncodeOptions options{.add_special = !opts->no_special, .parse_special = !opts->no_special};
    const auto ids = tok.encode(opts->text, options);
    if (opts->pieces) {
      for (auto id : ids) fmt::print("{}\t{}\t{}\n", id, quote(tok.token_text(id)), quote(tok.token_bytes(id)));
    } else {
      std::string line;
      for (size_t i = 0; i < ids.size(); ++i) line += (i ? " " : "") + std::to_string(ids[i]);
      fmt::print("{}\n", line);
    }
    return 0;
  };
}

Runner add_detokenize(CLI::App& app) {
  struct Options {
    std::string model;
    std::vector<std::string> ids;
    bool skip_special = false;
  };
  auto opts = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("detokenize", "Print the text of token IDS (ill-formed UTF-8 becomes U+FFFD)");
  cmd->add_option("-m,--model", opts->model, "GGUF file, model directory, or tokenizer.json")->required();
  cmd->add_flag("--skip-special", opts->skip_special, "leave out special tokens (BOS, EOS, ...)");
  cmd->add_option("ids", opts->ids, "token ids")->required();
  return [opts]() -> int {
    std::vector<tokenizer::TokenId> ids;
    for (const std::string& text : opts->ids) {
      size_t used = 0;
      long long value = -1;
      try {
        value = std::stoll(text, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != text.size() || value < 0 || value > INT32_MAX)
        throw InvalidArgumentError("detokenize: \"" + text + "\" is not a token id; give non-negative integers");
      ids.push_back(static_cast<tokenizer::TokenId>(value));
    }
    const auto tok = tokenizer::Tokenizer::from_path(opts->model);
    fmt::print("{}\n", tokenizer::bytes_to_text(tok.decode(ids, {.skip_special = opts->skip_special})));
    return 0;
  };
}

}  // namespace lathe::cli
