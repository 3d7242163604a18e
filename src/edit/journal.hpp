// A study's journal: JSON Lines, appended one finished trial at a time, so a study killed at any
// moment resumes from its last finished trial.
//   line 1: {"kind":"study","version":1,"space":[{"name","low","high"}...],"objectives":[...],
//            "seed":...,"settings":{...}}
//   then:   {"kind":"trial","number":N,"params":{...},"values":[...],"seconds":S,"extra":{...}}
// Each trial line goes out in one write() followed by fsync, so a crash leaves at worst a torn
// (newline-less) last line, which open() drops with a warning and cuts off before appending.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "edit/tpe.hpp"

namespace lathe::edit {

// The header fields a study is identified by; pass the result to Journal::open. `inputs` names the
// files the trials were measured on by content: {"model": {"path": P, "fingerprint": F}, ...}
// (fingerprints from io/fingerprint.hpp); on resume only the fingerprints must match (a moved file
// is the same input, a changed file at the same path is not).
nlohmann::json make_study_header(const std::vector<ParamSpec>& space, const std::vector<std::string>& objectives,
                                 uint64_t seed, nlohmann::json settings = nlohmann::json::object(),
                                 nlohmann::json inputs = nlohmann::json::object());

class Journal {
 public:
  static constexpr size_t kMaxLineBytes = size_t{1} << 20;  // longer lines are a FormatError

  // Creates the file with the header, or reads an existing one back. `header` is an object with
  // at least "space" (array of {"name","low","high"}) and "objectives" (array of strings), as
  // make_study_header() builds it; every field of it must equal the stored header's, else
  // InvalidArgumentError lists the fields (and settings keys) that differ; "inputs" is compared by
  // fingerprint, and a mismatch (or a stored header without fingerprints) is an InvalidArgumentError
  // naming each input that changed, its path and both fingerprints. With `restart` an existing
  // journal is emptied first (its trials are discarded) and a new study begins. A torn last line is
  // dropped with a message to `warn`; any other bad line is a FormatError naming the file, the line
  // number and its byte offset. An empty file is treated as new (a crash before the header was
  // written). Throws IoError when the file cannot be opened or is locked by another process.
  static Journal open(const std::filesystem::path& path, const nlohmann::json& header,
                      std::function<void(std::string_view)> warn = {}, bool restart = false);

  Journal(Journal&& other) noexcept;
  Journal& operator=(Journal&& other) noexcept;
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;
  ~Journal();

  const std::vector<Trial>& trials() const noexcept { return trials_; }
  const nlohmann::json& header() const noexcept { return header_; }  // as stored (with kind, version)
  const std::filesystem::path& path() const noexcept { return path_; }

  // Writes one line (one write(), then fsync); never rewrites earlier lines. Throws
  // InvalidArgumentError for a trial whose parameters differ from the space, whose value count is
  // neither 0 nor the number of objectives, or with a non-finite number (JSON cannot hold it).
  void append(const Trial& trial);

 private:
  Journal() = default;
  std::filesystem::path path_;
  nlohmann::json header_;
  std::vector<std::string> param_names_;
  size_t n_objectives_ = 0;
  std::vector<Trial> trials_;
  int fd_ = -1;
};

}  // namespace lathe::edit
