#include "edit/journal.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstring>
#include <set>
#include <utility>

#include "io/mapped_file.hpp"
#include "lathe/error.hpp"

namespace lathe::edit {
namespace {

using nlohmann::json;

constexpr const char* kRemedyLine =
    "fix or delete that line (a study's journal is plain JSON Lines), or start a new study with another --journal path";
constexpr const char* kRemedyStudy =
    "pass --restart to discard the journal's trials and start over, or a new --journal path to start a new study";

std::string shorten(const json& value) {
  std::string text = value.dump(-1, ' ', false, json::error_handler_t::replace);
  if (text.size() > 120) text = text.substr(0, 117) + "...";
  return text;
}

// The caller's header must name the space and objectives in the shape make_study_header builds.
void check_caller_header(const json& header, std::vector<std::string>& param_names, size_t& n_objectives) {
  if (!header.is_object()) throw InvalidArgumentError("Journal::open: the header must be a JSON object (use make_study_header)");
  if (!header.contains("space") || !header["space"].is_array() || header["space"].empty())
    throw InvalidArgumentError("Journal::open: the header needs a non-empty \"space\" array (use make_study_header)");
  for (const auto& spec : header["space"]) {
    if (!spec.is_object() || !spec.contains("name") || !spec["name"].is_string())
      throw InvalidArgumentError(fmt::format("Journal::open: header space entry {} has no string \"name\" (use make_study_header)",
                                             shorten(spec)));
    param_names.push_back(spec["name"].get<std::string>());
  }
  if (!header.contains("objectives") || !header["objectives"].is_array() || header["objectives"].empty())
    throw InvalidArgumentError("Journal::open: the header needs a non-empty \"objectives\" array (use make_study_header)");
  n_objectives = header["objectives"].size();
  for (const char* reserved : {"kind", "version"})
    if (header.contains(reserved))
      throw InvalidArgumentError(fmt::format("Journal::open: the header field \"{}\" is the journal's own; leave it out", reserved));
}

std::string input_fingerprint(const json& input) {
  return input.is_object() && input.contains("fingerprint") && input["fingerprint"].is_string()
             ? input["fingerprint"].get<std::string>()
             : std::string();
}
std::string input_path(const json& input) {
  return input.is_object() && input.contains("path") && input["path"].is_string() ? input["path"].get<std::string>()
                                                                                  : std::string("?");
}

// The inputs (by content) whose fingerprints differ between the stored header and the caller's.
std::vector<std::string> input_differences(const json& stored, const json& wanted) {
  std::vector<std::string> differences;
  if (!wanted.contains("inputs") || !wanted["inputs"].is_object()) return differences;
  const json stored_inputs = stored.contains("inputs") && stored["inputs"].is_object() ? stored["inputs"] : json::object();
  for (const auto& [name, input] : wanted["inputs"].items()) {
    const std::string now = input_fingerprint(input);
    const json before = stored_inputs.contains(name) ? stored_inputs[name] : json();
    const std::string then = input_fingerprint(before);
    if (then.empty())
      differences.push_back(fmt::format("the {} {} cannot be checked: the journal records no fingerprint of it (an "
                                        "older lathe wrote it)",
                                        name, input_path(input)));
    else if (then != now)
      differences.push_back(fmt::format("the {} {} is not the one the journal's trials were measured on (journal: {} "
                                        "{}, now: {})",
                                        name, input_path(input), input_path(before), then, now));
  }
  return differences;
}

// Fields (and settings keys) where the caller's header and the stored one differ; "inputs" is
// input_differences()'s.
std::vector<std::string> header_differences(const json& stored, const json& wanted) {
  std::vector<std::string> differences;
  for (const auto& [key, value] : wanted.items()) {
    if (key == "inputs") continue;
    const json stored_value = stored.contains(key) ? stored[key] : json();
    if (stored_value == value) continue;
    if (stored_value.is_object() && value.is_object()) {
      std::set<std::string> keys;
      for (const auto& item : stored_value.items()) keys.insert(item.key());
      for (const auto& item : value.items()) keys.insert(item.key());
      for (const auto& sub : keys) {
        const json a = stored_value.contains(sub) ? stored_value[sub] : json();
        const json b = value.contains(sub) ? value[sub] : json();
        if (a != b) differences.push_back(fmt::format("{}.{} (journal: {}, now: {})", key, sub, shorten(a), shorten(b)));
      }
    } else {
      differences.push_back(fmt::format("{} (journal: {}, now: {})", key, shorten(stored_value), shorten(value)));
    }
  }
  return differences;
}

void write_all(int fd, const std::string& bytes, const std::filesystem::path& path) {
  const char* p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    const ssize_t written = ::write(fd, p, left);
    if (written < 0) {
      if (errno == EINTR) continue;
      throw IoError(fmt::format("{}: writing the journal failed: {}; check free disk space", path.string(),
                                std::strerror(errno)));
    }
    p += written;
    left -= static_cast<size_t>(written);
  }
  if (::fsync(fd) != 0)
    throw IoError(fmt::format("{}: flushing the journal failed: {}; check free disk space", path.string(),
                              std::strerror(errno)));
}

// Why a trial line is unusable, or "" when it is fine (then `trial` holds it).
std::string parse_trial(const json& line, const std::vector<std::string>& param_names, size_t n_objectives, Trial& trial) {
  if (!line.is_object()) return "is not a JSON object";
  if (!line.contains("kind") || line["kind"] != "trial") return "has no \"kind\":\"trial\"";
  if (!line.contains("number") || !line["number"].is_number_integer()) return "has no integer \"number\"";
  const auto number = line["number"].get<int64_t>();
  if (number < INT_MIN || number > INT_MAX) return fmt::format("has trial number {} beyond int's range", number);
  trial.number = static_cast<int>(number);
  if (!line.contains("params") || !line["params"].is_object()) return "has no \"params\" object";
  const auto& params = line["params"];
  if (params.size() != param_names.size()) return fmt::format("has {} params, the study's space has {}", params.size(), param_names.size());
  for (const auto& name : param_names) {
    if (!params.contains(name) || !params[name].is_number()) return fmt::format("has no number for parameter '{}'", name);
    trial.params[name] = params[name].get<double>();
  }
  if (!line.contains("values") || !line["values"].is_array()) return "has no \"values\" array";
  const auto& values = line["values"];
  if (!values.empty() && values.size() != n_objectives)
    return fmt::format("has {} values, the study has {} objectives", values.size(), n_objectives);
  for (const auto& value : values) {
    if (!value.is_number()) return fmt::format("has a non-number value {}", shorten(value));
    trial.values.push_back(value.get<double>());
  }
  if (!line.contains("seconds") || !line["seconds"].is_number()) return "has no number \"seconds\"";
  trial.seconds = line["seconds"].get<double>();
  trial.extra = line.contains("extra") ? line["extra"] : json::object();
  return "";
}

}  // namespace

json make_study_header(const std::vector<ParamSpec>& space, const std::vector<std::string>& objectives, uint64_t seed,
                       json settings, json inputs) {
  json specs = json::array();
  for (const auto& spec : space) specs.push_back({{"name", spec.name}, {"low", spec.low}, {"high", spec.high}});
  json header = {{"space", std::move(specs)}, {"objectives", objectives}, {"seed", seed}, {"settings", std::move(settings)}};
  if (!inputs.empty()) header["inputs"] = std::move(inputs);
  return header;
}

Journal::Journal(Journal&& other) noexcept
    : path_(std::move(other.path_)),
      header_(std::move(other.header_)),
      param_names_(std::move(other.param_names_)),
      n_objectives_(other.n_objectives_),
      trials_(std::move(other.trials_)),
      fd_(std::exchange(other.fd_, -1)) {}

Journal& Journal::operator=(Journal&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(other.path_);
    header_ = std::move(other.header_);
    param_names_ = std::move(other.param_names_);
    n_objectives_ = other.n_objectives_;
    trials_ = std::move(other.trials_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

Journal::~Journal() {
  if (fd_ >= 0) ::close(fd_);  // also releases the flock
}

Journal Journal::open(const std::filesystem::path& path, const json& header, std::function<void(std::string_view)> warn,
                      bool restart) {
  Journal journal;
  journal.path_ = path;
  check_caller_header(header, journal.param_names_, journal.n_objectives_);
  journal.header_ = json{{"kind", "study"}, {"version", 1}};
  journal.header_.update(header);

  const std::string file = path.string();
  journal.fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (journal.fd_ < 0)
    throw IoError(fmt::format("{}: cannot open the journal: {}; check that the directory exists and is writable", file,
                              std::strerror(errno)));
  // Two studies appending to one journal would interleave their trials.
  if (::flock(journal.fd_, LOCK_EX | LOCK_NB) != 0)
    throw IoError(fmt::format("{}: the journal is in use by another process; wait for it or pass another --journal path", file));
  struct stat st {};
  if (::fstat(journal.fd_, &st) != 0 || !S_ISREG(st.st_mode))
    throw IoError(fmt::format("{}: the journal is not a regular file; pass a file path to --journal", file));
  if (restart && st.st_size > 0) {
    if (::ftruncate(journal.fd_, 0) != 0)
      throw IoError(fmt::format("{}: cannot empty the journal for --restart: {}; check permissions", file,
                                std::strerror(errno)));
    st.st_size = 0;
  }

  uint64_t good_end = 0;  // bytes of complete, valid lines
  bool needs_newline = false, has_header = false;
  if (st.st_size > 0) {
    const MappedFile mapped(path);
    const auto bytes = mapped.bytes();
    size_t offset = 0;
    for (size_t line_number = 1; offset < bytes.size(); ++line_number) {
      const size_t window = std::min(bytes.size() - offset, Journal::kMaxLineBytes + 1);
      const auto* start = reinterpret_cast<const char*>(bytes.data() + offset);
      const auto* newline = static_cast<const char*>(std::memchr(start, '\n', window));
      const std::string field = fmt::format("line {}", line_number);
      if (newline == nullptr && window > Journal::kMaxLineBytes)
        throw FormatError(file, field, offset, fmt::format("line is longer than {} bytes", Journal::kMaxLineBytes), kRemedyLine);
      const bool complete = newline != nullptr;
      const size_t length = complete ? static_cast<size_t>(newline - start) : window;
      const std::string_view text(start, length);

      std::string problem;
      json line;
      if (text.find('\0') != std::string_view::npos) {
        problem = "contains a NUL byte";
      } else {
        line = json::parse(text.begin(), text.end(), nullptr, false);
        if (line.is_discarded()) problem = "is not valid JSON";
      }
      Trial trial;
      if (problem.empty() && !has_header) {
        if (!line.is_object() || !line.contains("kind") || line["kind"] != "study")
          problem = "is not the study header ({\"kind\":\"study\",...})";
        else if (!line.contains("version") || line["version"] != 1)
          throw UnsupportedError(format_error_message(file, field, offset,
                                                      fmt::format("journal version {} is not supported (this lathe writes 1)",
                                                                  line.contains("version") ? shorten(line["version"]) : "missing"),
                                                      "use the lathe that wrote it, or start a new study with another --journal path"));
      } else if (problem.empty()) {
        problem = parse_trial(line, journal.param_names_, journal.n_objectives_, trial);
      }

      if (!problem.empty() && !complete) {  // a crash mid-write: drop the fragment
        if (warn)
          warn(fmt::format("{}: line {} (offset {}) is incomplete, probably cut off by a crash; dropping it and resuming "
                           "after trial line {}", file, line_number, offset, journal.trials_.size()));
        break;
      }
      if (!problem.empty()) throw FormatError(file, field, offset, problem, kRemedyLine);

      if (!has_header) {
        const auto changed_inputs = input_differences(line, header);
        if (!changed_inputs.empty())
          throw InvalidArgumentError(fmt::format("{}: the journal belongs to a study of other inputs: {}; {}", file,
                                                 fmt::join(changed_inputs, "; "), kRemedyStudy));
        const auto differences = header_differences(line, header);
        if (!differences.empty())
          throw InvalidArgumentError(fmt::format(
              "{}: the journal belongs to a different study: {}; pass the original settings to resume it, or {}", file,
              fmt::join(differences, "; "), kRemedyStudy));
        journal.header_ = line;
        has_header = true;
      } else {
        journal.trials_.push_back(std::move(trial));
      }
      offset += length + (complete ? 1 : 0);
      good_end = offset;
      needs_newline = !complete;
    }
  }

  if (good_end < static_cast<uint64_t>(st.st_size) && ::ftruncate(journal.fd_, static_cast<off_t>(good_end)) != 0)
    throw IoError(fmt::format("{}: cannot cut off the incomplete last line: {}; check permissions", file, std::strerror(errno)));
  if (needs_newline) write_all(journal.fd_, "\n", path);
  if (!has_header)
    write_all(journal.fd_, journal.header_.dump(-1, ' ', false, json::error_handler_t::replace) + "\n", path);
  return journal;
}

void Journal::append(const Trial& trial) {
  const std::string where = fmt::format("{}: trial {}", path_.string(), trial.number);
  if (trial.params.size() != param_names_.size())
    throw InvalidArgumentError(fmt::format("{} has {} params, the study's space has {}; give exactly the space's parameters",
                                           where, trial.params.size(), param_names_.size()));
  json params = json::object();
  for (const auto& name : param_names_) {
    const auto it = trial.params.find(name);
    if (it == trial.params.end())
      throw InvalidArgumentError(fmt::format("{} lacks parameter '{}'; give exactly the space's parameters", where, name));
    if (!std::isfinite(it->second))
      throw InvalidArgumentError(fmt::format("{} parameter '{}' is {}; JSON cannot hold it", where, name, it->second));
    params[name] = it->second;
  }
  if (!trial.values.empty() && trial.values.size() != n_objectives_)
    throw InvalidArgumentError(fmt::format("{} has {} values, the study has {} objectives; give all or none (failed)", where,
                                           trial.values.size(), n_objectives_));
  for (double value : trial.values)
    if (!std::isfinite(value))
      throw InvalidArgumentError(fmt::format("{} has the non-finite objective {}; record it as failed (no values)", where, value));
  if (!std::isfinite(trial.seconds))
    throw InvalidArgumentError(fmt::format("{} has non-finite seconds {}", where, trial.seconds));

  const json line{{"kind", "trial"},        {"number", trial.number},   {"params", std::move(params)},
                  {"values", trial.values}, {"seconds", trial.seconds}, {"extra", trial.extra}};
  const std::string text = line.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  if (text.size() > kMaxLineBytes)
    throw InvalidArgumentError(fmt::format("{} is {} bytes as JSON, over the journal's {} byte line limit; keep \"extra\" smaller",
                                           where, text.size(), kMaxLineBytes));
  write_all(fd_, text, path_);
  trials_.push_back(trial);
}

}  // namespace lathe::edit
