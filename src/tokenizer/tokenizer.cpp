#include "tokenizer/tokenizer.hpp"

#include <algorithm>
#include <cstring>

#include <unicode/uchar.h>

#include "io/gguf.hpp"
#include "lathe/error.hpp"
#include "tokenizer/pipeline.hpp"

namespace lathe::tokenizer {

// ---- Vocabulary -------------------------------------------------------------------------------

std::optional<TokenId> Vocabulary::find(std::string_view text) const {
  auto it = index_.find(text);
  if (it == index_.end()) return std::nullopt;
  return it->second;
}

void Vocabulary::build_index() {
  index_.clear();
  index_.reserve(tokens.size());
  for (size_t id = 0; id < tokens.size(); ++id) {
    if (types[id] == TokenType::Unused && tokens[id].empty()) continue;  // hole in the id space
    index_.try_emplace(tokens[id], static_cast<TokenId>(id));
  }
}

// ---- Pipeline ---------------------------------------------------------------------------------

std::string Pipeline::normalize(std::string_view text) const {
  std::string current(text);
  for (const NormalizerStep& step : normalizers) {
    switch (step.kind) {
      case NormalizerStep::Kind::Unicode:
        current = normalize_unicode(current, step.form);
        break;
      case NormalizerStep::Kind::Prepend:
        if (!current.empty()) current.insert(0, step.content);  // HF prepends only to non-empty text
        break;
      case NormalizerStep::Kind::Replace: {
        if (step.pattern.empty()) break;
        std::string replaced;
        replaced.reserve(current.size());
        size_t pos = 0;
        for (size_t hit; (hit = current.find(step.pattern, pos)) != std::string::npos; pos = hit + step.pattern.size()) {
          replaced.append(current, pos, hit - pos);
          replaced += step.content;
        }
        replaced.append(current, pos, std::string::npos);
        current = std::move(replaced);
        break;
      }
    }
  }
  return current;
}

namespace {

using Span = std::pair<uint32_t, uint32_t>;

// Applies HF's SplitDelimiterBehavior to the alternating (span, is_match) list of one piece.
void apply_split_behavior(const std::vector<std::pair<Span, bool>>& parts, SplitBehavior behavior,
                          std::vector<Span>& out) {
  std::vector<Span> merged;
  switch (behavior) {
    case SplitBehavior::Removed:
      for (const auto& [span, is_match] : parts)
        if (!is_match) merged.push_back(span);
      break;
    case SplitBehavior::Isolated:
      for (const auto& [span, is_match] : parts) merged.push_back(span);
      break;
    case SplitBehavior::MergedWithPrevious: {
      bool previous_match = false;
      for (const auto& [span, is_match] : parts) {
        if (is_match && !previous_match && !merged.empty()) merged.back().second = span.second;
        else merged.push_back(span);
        previous_match = is_match;
      }
      break;
    }
    case SplitBehavior::MergedWithNext: {
      bool previous_match = false;
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (it->second && !previous_match && !merged.empty()) merged.back().first = it->first.first;
        else merged.push_back(it->first);
        previous_match = it->second;
      }
      std::reverse(merged.begin(), merged.end());
      break;
    }
    case SplitBehavior::Contiguous: {
      bool previous_match = false;
      for (const auto& [span, is_match] : parts) {
        if (is_match == previous_match && !merged.empty()) merged.back().second = span.second;
        else merged.push_back(span);
        previous_match = is_match;
      }
      break;
    }
  }
  for (const Span& span : merged)
    if (span.second > span.first) out.push_back(span);
}

}  // namespace

void Pipeline::pre_tokenize(std::string_view text, std::vector<Span>& pieces) const {
  pieces.clear();
  if (text.empty()) return;
  pieces.emplace_back(0, static_cast<uint32_t>(text.size()));
  std::vector<Span> next_pieces, matches;
  std::vector<std::pair<Span, bool>> parts;
  for (const PreTokenizerStep& step : pre_tokenizers) {
    next_pieces.clear();
    for (const Span& piece : pieces) {
      const std::string_view subject = text.substr(piece.first, piece.second - piece.first);
      matches.clear();
      step.regex->find_all(subject, matches);
      parts.clear();
      uint32_t prev = 0;
      for (const auto& [start, end] : matches) {
        if (start > prev) parts.push_back({{piece.first + prev, piece.first + start}, step.invert});
        parts.push_back({{piece.first + start, piece.first + end}, !step.invert});
        prev = end;
      }
      if (prev < subject.size())
        parts.push_back({{piece.first + prev, piece.second}, step.invert});
      if (step.behavior == SplitBehavior::Isolated) {  // the common case, without copies
        for (const auto& [span, is_match] : parts) next_pieces.push_back(span);
      } else {
        apply_split_behavior(parts, step.behavior, next_pieces);
      }
    }
    pieces.swap(next_pieces);
  }
}

void Pipeline::finalize(const Vocabulary& vocab) {
  for (auto& list : added_by_first_byte) list.clear();
  has_normalized_added = false;
  for (uint32_t i = 0; i < vocab.added_tokens.size(); ++i) {
    const AddedToken& token = vocab.added_tokens[i];
    // A token that is not valid UTF-8 (possible in GGUF) can never occur in the (repaired,
    // valid) text as a whole character sequence; matching its bytes could split a character.
    if (token.content.empty() || !is_valid_utf8(token.content)) continue;
    added_by_first_byte[static_cast<uint8_t>(token.content[0])].push_back(i);
    has_normalized_added = has_normalized_added || token.normalized;
  }
  for (auto& list : added_by_first_byte)
    std::stable_sort(list.begin(), list.end(), [&](uint32_t a, uint32_t b) {
      return vocab.added_tokens[a].content.size() > vocab.added_tokens[b].content.size();
    });
  strip_step = nullptr;
  for (const DecoderStep& step : decoders)
    if (step.kind == DecoderStep::Kind::Strip) strip_step = &step;
}

// ---- Added tokens -----------------------------------------------------------------------------

namespace {

struct Segment {
  size_t start = 0, end = 0;
  TokenId added = -1;  // >= 0: this segment is the added token with that id
};

// A word character for single_word added tokens: HF tests `\w` (Rust regex, Unicode): Alphabetic,
// marks, decimal digits, connector punctuation ("_") and join controls (ZWJ/ZWNJ), but not other
// numbers such as "²" (checked against tokenizers in tokenizer_oracle_test's AddedTokens test).
bool is_word_char(char32_t cp) {
  const auto c = static_cast<UChar32>(cp);
  if (u_isUAlphabetic(c) || u_hasBinaryProperty(c, UCHAR_JOIN_CONTROL)) return true;
  const int8_t type = u_charType(c);
  return type == U_DECIMAL_DIGIT_NUMBER || type == U_CONNECTOR_PUNCTUATION || type == U_NON_SPACING_MARK ||
         type == U_COMBINING_SPACING_MARK || type == U_ENCLOSING_MARK;
}

char32_t code_point_before(std::string_view text, size_t pos) {
  size_t start = pos - 1;
  while (start > 0 && (static_cast<uint8_t>(text[start]) & 0xC0) == 0x80) --start;
  return decode_code_point(text, start, pos - start);
}

// Leftmost-longest matching of the added tokens whose `normalized` flag is `normalized` in
// `text`, with HF's single_word / lstrip / rstrip adjustments. Appends segments covering all of
// `text`. As in HF's AddedVocabulary::find_matches, a match that is then discarded (a special
// token with parse_special off, a single_word token inside a word) stays consumed: the search
// resumes after it, so no shorter or overlapping token is matched there instead.
void split_on_added_tokens(std::string_view text, const std::vector<AddedToken>& tokens,
                           const Pipeline& pipeline, bool normalized, bool parse_special,
                           std::vector<Segment>& out) {
  size_t emitted = 0;  // end of the last segment appended
  size_t pos = 0;
  while (pos < text.size()) {
    const AddedToken* best = nullptr;
    // Longest first: the first hit is the longest token at `pos`.
    for (uint32_t index : pipeline.added_by_first_byte[static_cast<uint8_t>(text[pos])]) {
      const AddedToken& token = tokens[index];
      if (token.normalized != normalized) continue;
      if (token.content.size() <= text.size() - pos &&
          std::memcmp(text.data() + pos, token.content.data(), token.content.size()) == 0 && !token.content.empty()) {
        best = &token;
        break;
      }
    }
    if (best == nullptr) {
      pos += std::max<size_t>(1, utf8_sequence_length(text, pos));  // matches start on characters only
      continue;
    }
    size_t start = pos, stop = pos + best->content.size();
    if (best->special && !parse_special) {
      pos = stop;
      continue;
    }
    if (best->single_word) {
      const bool word_before = start > 0 && is_word_char(code_point_before(text, start));
      bool word_after = false;
      if (stop < text.size()) {
        const size_t len = std::max<size_t>(1, utf8_sequence_length(text, stop));
        word_after = is_word_char(decode_code_point(text, stop, len));
      }
      if (word_before || word_after) {
        pos = stop;
        continue;
      }
    }
    if (best->lstrip) {
      while (start > emitted && is_unicode_whitespace(code_point_before(text, start))) {
        size_t s = start - 1;
        while (s > 0 && (static_cast<uint8_t>(text[s]) & 0xC0) == 0x80) --s;
        start = s;
      }
    }
    if (best->rstrip) {
      while (stop < text.size()) {
        const size_t len = std::max<size_t>(1, utf8_sequence_length(text, stop));
        if (!is_unicode_whitespace(decode_code_point(text, stop, len))) break;
        stop += len;
      }
    }
    if (start > emitted) out.push_back({emitted, start, -1});
    out.push_back({start, stop, best->id});
    emitted = stop;
    pos = stop;
  }
  if (emitted < text.size()) out.push_back({emitted, text.size(), -1});
}

}  // namespace

// ---- Tokenizer --------------------------------------------------------------------------------

Tokenizer::Tokenizer(std::unique_ptr<Vocabulary> vocab, std::unique_ptr<Pipeline> pipeline)
    : vocab_(std::move(vocab)), pipeline_(std::move(pipeline)) {
  pipeline_->finalize(*vocab_);
}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

std::vector<TokenId> Tokenizer::encode(std::string_view text, const EncodeOptions& options) const {
  std::string repaired;
  if (!is_valid_utf8(text)) {
    repaired = replace_invalid_utf8(text);
    text = repaired;
  }
  std::vector<TokenId> ids;
  ids.reserve(text.size() / 3 + 4);
  if (options.add_special && vocab_->add_bos && vocab_->bos) ids.push_back(*vocab_->bos);

  // Raw-text added tokens are matched before normalization, the normalized ones inside each
  // normalized segment (HF AddedVocabulary order).
  const auto& added = vocab_->added_tokens;
  std::vector<Segment> raw_segments;
  split_on_added_tokens(text, added, *pipeline_, false, options.parse_special, raw_segments);
  std::vector<Span> pieces;
  std::vector<Segment> inner_segments;
  for (const Segment& segment : raw_segments) {
    if (segment.added >= 0) {
      ids.push_back(segment.added);
      continue;
    }
    const std::string normalized = pipeline_->normalize(text.substr(segment.start, segment.end - segment.start));
    inner_segments.clear();
    if (pipeline_->has_normalized_added)
      split_on_added_tokens(normalized, added, *pipeline_, true, options.parse_special, inner_segments);
    else inner_segments.push_back({0, normalized.size(), -1});
    for (const Segment& inner : inner_segments) {
      if (inner.added >= 0) {
        ids.push_back(inner.added);
        continue;
      }
      const std::string_view part = std::string_view(normalized).substr(inner.start, inner.end - inner.start);
      pipeline_->pre_tokenize(part, pieces);
      for (const Span& piece : pieces)
        pipeline_->model->encode_word(part.substr(piece.first, piece.second - piece.first), pipeline_->byte_level, ids);
    }
  }
  if (options.add_special && vocab_->add_eos && vocab_->eos) ids.push_back(*vocab_->eos);
  return ids;
}

const std::string& Tokenizer::token_text(TokenId id) const {
  if (id < 0 || static_cast<size_t>(id) >= vocab_->size())
    throw InvalidArgumentError("token id " + std::to_string(id) + " is outside the vocabulary (size " +
                               std::to_string(vocab_->size()) + "); use ids from this model's tokenizer");
  return vocab_->tokens[static_cast<size_t>(id)];
}

static bool is_added_token_type(TokenType type) {
  return type == TokenType::Control || type == TokenType::UserDefined;
}

static std::optional<uint8_t> parse_byte_token(std::string_view text) {
  // "<0xNN>" with upper- or lower-case hex digits
  if (text.size() != 6 || text.substr(0, 3) != "<0x" || text[5] != '>') return std::nullopt;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const int hi = hex(text[3]), lo = hex(text[4]);
  if (hi < 0 || lo < 0) return std::nullopt;
  return static_cast<uint8_t>(hi * 16 + lo);
}

void Tokenizer::append_token_bytes(TokenId id, std::string& out, size_t& strip_budget,
                                   const DecodeOptions& options) const {
  const std::string& text = token_text(id);
  const TokenType type = vocab_->types[static_cast<size_t>(id)];
  if (options.skip_special && type == TokenType::Control) return;
  std::string bytes;
  if (is_added_token_type(type)) {
    bytes = text;  // added tokens stand for their literal content
  } else {
    bytes = text;
    for (const DecoderStep& step : pipeline_->decoders) {
      switch (step.kind) {
        case DecoderStep::Kind::ByteLevel: {
          std::string raw;
          const ByteLevelMap& map = byte_level_map();
          for (size_t pos = 0; pos < bytes.size();) {
            size_t len = utf8_sequence_length(bytes, pos);
            if (len == 0) len = 1;
            const char32_t cp = decode_code_point(bytes, pos, len);
            if (cp < map.code_point_to_byte.size() && map.code_point_to_byte[cp] >= 0)
              raw.push_back(static_cast<char>(map.code_point_to_byte[cp]));
            else
              raw.append(bytes, pos, len);  // not a byte-level character: keep it as it is
            pos += len;
          }
          bytes = std::move(raw);
          break;
        }
        case DecoderStep::Kind::Replace: {
          if (step.pattern.empty()) break;
          std::string replaced;
          size_t pos = 0;
          for (size_t hit; (hit = bytes.find(step.pattern, pos)) != std::string::npos; pos = hit + step.pattern.size()) {
            replaced.append(bytes, pos, hit - pos);
            replaced += step.content;
          }
          replaced.append(bytes, pos, std::string::npos);
          bytes = std::move(replaced);
          break;
        }
        case DecoderStep::Kind::ByteFallback:
          if (auto byte = parse_byte_token(bytes)) bytes.assign(1, static_cast<char>(*byte));
          break;
        case DecoderStep::Kind::Fuse:
        case DecoderStep::Kind::Strip:
          break;  // sequence-level: handled through strip_budget
      }
    }
  }
  // Sequence-start strip (Llama 2 removes the space its normalizer prepended).
  if (strip_budget > 0 && pipeline_->strip_step != nullptr) {
    const std::string& content = pipeline_->strip_step->content;
    size_t cut = 0;
    while (strip_budget > 0 && !content.empty() && bytes.compare(cut, content.size(), content) == 0) {
      cut += content.size();
      --strip_budget;
    }
    if (cut < bytes.size()) strip_budget = 0;  // the sequence now starts with something else
    bytes.erase(0, cut);
  }
  out += bytes;
}

size_t Tokenizer::initial_strip() const noexcept {
  return pipeline_->strip_step != nullptr ? pipeline_->strip_step->start : 0;
}

std::string Tokenizer::decode(const std::vector<TokenId>& ids, const DecodeOptions& options) const {
  std::string out;
  size_t strip_budget = initial_strip();
  for (TokenId id : ids) append_token_bytes(id, out, strip_budget, options);
  return out;
}

std::string Tokenizer::token_bytes(TokenId id) const {
  std::string out;
  size_t no_strip = 0;
  append_token_bytes(id, out, no_strip, DecodeOptions{});
  return out;
}

std::string bytes_to_text(std::string_view bytes) {
  return is_valid_utf8(bytes) ? std::string(bytes) : replace_invalid_utf8(bytes);
}

// ---- StreamDecoder ----------------------------------------------------------------------------

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, DecodeOptions options)
    : tokenizer_(&tokenizer), options_(options), strip_budget_(tokenizer.initial_strip()) {}

std::string StreamDecoder::push(TokenId id) {
  tokenizer_->append_token_bytes(id, pending_, strip_budget_, options_);
  // Emit everything up to the last position that cannot be the start of an unfinished character:
  // look back at most 3 bytes for a lead byte whose sequence is still incomplete.
  size_t keep_from = pending_.size();
  for (size_t back = 1; back <= 3 && back <= pending_.size(); ++back) {
    const size_t pos = pending_.size() - back;
    const auto byte = static_cast<uint8_t>(pending_[pos]);
    if ((byte & 0xC0) == 0x80) continue;  // continuation byte: keep looking for its lead
    const size_t needed = byte >= 0xF0 ? 4 : byte >= 0xE0 ? 3 : byte >= 0xC0 ? 2 : 1;
    if (needed > back && byte >= 0xC2 && byte <= 0xF4) keep_from = pos;  // may still complete
    break;
  }
  std::string ready = bytes_to_text(std::string_view(pending_).substr(0, keep_from));
  pending_.erase(0, keep_from);
  return ready;
}

std::string StreamDecoder::finish() {
  std::string rest = bytes_to_text(pending_);
  pending_.clear();
  return rest;
}

}  // namespace lathe::tokenizer
