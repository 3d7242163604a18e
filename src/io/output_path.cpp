#include "io/output_path.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>

#include "io/mapped_file.hpp"
#include "lathe/error.hpp"

namespace lathe {
namespace {

namespace fs = std::filesystem;

constexpr const char* kStagingName = ".lathe-staging";
constexpr const char* kOldName = ".lathe-old";
constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr const char* kSingleName = "model.safetensors";

// "out/" -> "out", so that its parent is the directory it is created in.
fs::path without_trailing_separator(fs::path p) {
  while (!p.has_filename() && p.has_relative_path()) p = p.parent_path();
  return p;
}

fs::path canonical_or_lexical(const fs::path& p) {
  std::error_code ec;
  auto c = fs::weakly_canonical(p, ec);
  return ec ? fs::absolute(p, ec).lexically_normal() : c;
}

// The files a model directory is loaded from (weights, configuration, tokenizer).
bool is_model_file_name(const std::string& name) {
  return is_safetensors_weight_name(name) || name == "config.json" || name == "generation_config.json" ||
         name == "tokenizer.json" || name == "tokenizer_config.json" || name == "tokenizer.model" ||
         name == "special_tokens_map.json";
}

bool exists_no_follow(const fs::path& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0;
}

void check_writable(const OutputRequest& r, const fs::path& dir) {
  const fs::path where = dir.empty() ? fs::path(".") : dir;
  std::error_code ec;
  const auto status = fs::status(where, ec);
  if (!fs::exists(status))
    throw NotFoundError(fmt::format("{} {}: the directory {} does not exist; create it first (mkdir -p {}) or choose "
                                    "another path",
                                    r.flag, r.path.string(), where.string(), where.string()));
  if (!fs::is_directory(status))
    throw InvalidArgumentError(fmt::format("{} {}: {} is not a directory; choose another path", r.flag, r.path.string(),
                                           where.string()));
  if (::access(where.c_str(), W_OK | X_OK) != 0)
    throw IoError(fmt::format("{} {}: the directory {} is not writable ({}); choose another path or fix its permissions",
                              r.flag, r.path.string(), where.string(), std::strerror(errno)));
}

}  // namespace

bool same_file(const fs::path& a, const fs::path& b) {
  struct stat sa {}, sb {};
  if (::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0) return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
  return canonical_or_lexical(a) == canonical_or_lexical(b);
}

bool is_safetensors_weight_name(std::string_view name) {
  if (name == kSingleName || name == kIndexName) return true;
  // model-00001-of-00003.safetensors (transformers writes at least 5 digits)
  constexpr std::string_view prefix = "model-", middle = "-of-", suffix = ".safetensors";
  if (name.size() < prefix.size() + middle.size() + suffix.size() + 2 || !name.starts_with(prefix) ||
      !name.ends_with(suffix))
    return false;
  const std::string_view numbers = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  const size_t of = numbers.find(middle);
  if (of == std::string_view::npos) return false;
  auto digits = [](std::string_view s) {
    return s.size() >= 5 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  return digits(numbers.substr(0, of)) && digits(numbers.substr(of + middle.size()));
}

void check_output(const OutputRequest& request) {
  if (request.path.empty())
    throw InvalidArgumentError(fmt::format("{}: no path given; pass the path to write", request.flag));
  OutputRequest r = request;
  r.path = without_trailing_separator(r.path);
  const bool directory = r.kind == OutputRequest::Kind::Directory;
  const fs::path out_canonical = canonical_or_lexical(r.path);
  // Where the output's directory entry is (its link, not the link's target).
  const fs::path entry = canonical_or_lexical(r.path.parent_path().empty() ? fs::path(".") : r.path.parent_path()) /
                         r.path.filename();
  std::error_code ec;
  const bool exists = exists_no_follow(r.path) || fs::exists(r.path, ec);

  for (const auto& [label, input] : r.inputs) {
    if (input.empty()) continue;
    const bool link = fs::is_symlink(r.path, ec) || fs::is_symlink(input, ec) ||
                      canonical_or_lexical(input) != out_canonical;  // a hard link, or a linked directory
    if (same_file(r.path, input))
      throw InvalidArgumentError(fmt::format("{} {} is {} {}{}; lathe never writes over what it reads: choose another "
                                             "output path",
                                             r.flag, r.path.string(), label, input.string(),
                                             link ? " (the same file through a link)" : ""));
    if (!fs::exists(input, ec)) continue;  // another output of the command, not written yet
    const fs::path in_canonical = canonical_or_lexical(input);
    if (fs::is_directory(input, ec) && entry == in_canonical / entry.filename() &&
        is_model_file_name(entry.filename().string()))
      throw InvalidArgumentError(fmt::format("{} {} would replace a file of {} {}; lathe never writes over what it "
                                             "reads: choose an output path outside it",
                                             r.flag, r.path.string(), label, input.string()));
    if (directory && exists && in_canonical.parent_path() == out_canonical) {
      const std::string name = in_canonical.filename().string();
      if (is_safetensors_weight_name(name) || (r.managed && r.managed(name)))
        throw InvalidArgumentError(fmt::format("{} {} holds {} {}, which writing the export there would replace or "
                                               "remove; choose another output directory",
                                               r.flag, r.path.string(), label, input.string()));
    }
  }

  if (exists) {
    const bool is_dir = fs::is_directory(r.path, ec);
    if (!directory && is_dir)
      throw InvalidArgumentError(fmt::format("{} {} is a directory; give a file name", r.flag, r.path.string()));
    if (directory && !is_dir)
      throw InvalidArgumentError(fmt::format("{} {} exists and is not a directory; choose a new or empty directory",
                                             r.flag, r.path.string()));
    if (!r.force) {
      if (!directory)
        throw InvalidArgumentError(fmt::format("{} {} already exists; choose another name or pass --force to replace "
                                               "it",
                                               r.flag, r.path.string()));
      if (!fs::is_empty(r.path, ec))
        throw InvalidArgumentError(fmt::format("{} {} is not empty; choose a new or empty directory, or pass --force "
                                               "to replace the export in it (other files are left alone)",
                                               r.flag, r.path.string()));
    }
    if (directory) {
      check_writable(r, r.path);
      return;
    }
  }
  check_writable(r, r.path.parent_path());
}

// ---- StagedDirectory ---------------------------------------------------------------------------------

StagedDirectory::StagedDirectory(fs::path dir) : dir_(without_trailing_separator(std::move(dir))) {
  std::error_code ec;
  in_place_ = fs::is_directory(dir_, ec);
  if (in_place_) {
    sweep_stale_temporaries(dir_, {kStagingName, kOldName});
    staging_ = temporary_path_for(dir_ / kStagingName);
  } else {
    sweep_stale_temporaries(dir_.parent_path(), {dir_.filename().string()});
    staging_ = temporary_path_for(dir_);
  }
  registration_ = TemporaryRegistration(staging_, TemporaryRegistration::Kind::Directory);
  fs::remove_all(staging_, ec);
  fs::create_directory(staging_, ec);
  if (ec)
    throw IoError(fmt::format("{}: cannot create the staging directory {}: {}; check that the directory is writable",
                              dir_.string(), staging_.string(), ec.message()));
}

StagedDirectory::~StagedDirectory() {
  if (!done_) {
    std::error_code ec;
    fs::remove_all(staging_, ec);
  }
  registration_.reset();
}

void StagedDirectory::commit(const std::function<bool(std::string_view)>& managed,
                             const std::function<void()>& after_each_move) {
  if (done_) throw InternalError(fmt::format("{}: StagedDirectory::commit called twice", dir_.string()));
  if (in_place_) {
    commit_in_place(managed, after_each_move);
    return;
  }
  const SignalDeferral hold;
  std::error_code ec;
  fs::rename(staging_, dir_, ec);
  if (ec)
    throw IoError(fmt::format("{}: cannot move the finished export from {} into place: {}; was {} created meanwhile? "
                              "remove it or choose another output path",
                              dir_.string(), staging_.string(), ec.message(), dir_.string()));
  done_ = true;
  registration_.reset();
  sync_directory(dir_.parent_path());
  if (after_each_move) after_each_move();
}

void StagedDirectory::commit_in_place(const std::function<bool(std::string_view)>& managed,
                                      const std::function<void()>& after_each_move) {
  std::error_code ec;
  std::set<std::string> staged;
  for (fs::directory_iterator it(staging_, ec), end; !ec && it != end; it.increment(ec)) staged.insert(it->path().filename().string());
  if (ec) throw IoError(fmt::format("{}: cannot list the staging directory: {}", staging_.string(), ec.message()));

  const fs::path old = temporary_path_for(dir_ / kOldName);
  TemporaryRegistration old_registration(old, TemporaryRegistration::Kind::Directory);
  fs::remove_all(old, ec);
  fs::create_directory(old, ec);
  if (ec) throw IoError(fmt::format("{}: cannot create {}: {}; check that the directory is writable", dir_.string(), old.string(), ec.message()));

  const SignalDeferral hold;  // the renames below run to the end once begun
  auto move = [&](const fs::path& from, const fs::path& to) {
    std::error_code move_ec;
    fs::rename(from, to, move_ec);
    if (move_ec) {
      // Keep both sides for the user: nothing of either export is deleted after a failed move.
      old_registration.reset();
      registration_.reset();
      done_ = true;
      throw IoError(fmt::format("{}: cannot move {} to {}: {}; the previous export's files that were moved are in {}, "
                                "the new export is in {}: move them back by hand, or fix the cause and rerun",
                                dir_.string(), from.string(), to.string(), move_ec.message(), old.string(),
                                staging_.string()));
    }
    if (after_each_move) after_each_move();
  };
  auto is_entry_point = [](const std::string& name) { return name == kIndexName || name == kSingleName; };

  // 1. Withdraw the previous export's entry points: the index first (model.safetensors shadows it),
  //    then model.safetensors. From here on a reader finds no weights until step 4.
  for (const char* name : {kIndexName, kSingleName})
    if (exists_no_follow(dir_ / name)) move(dir_ / name, old / name);
  // 2. The rest of the previous export that the new one does not overwrite.
  std::vector<std::string> stale;
  for (fs::directory_iterator it(dir_, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    std::error_code type_ec;
    if (it->is_directory(type_ec) || staged.count(name)) continue;
    if (is_safetensors_weight_name(name) || (managed && managed(name))) stale.push_back(name);
  }
  for (const auto& name : stale) move(dir_ / name, old / name);
  // 3. The new side files, then the shards, then the entry point.
  for (int pass = 0; pass < 3; ++pass) {
    for (const auto& name : staged) {
      const int kind = is_entry_point(name) ? 2 : is_safetensors_weight_name(name) ? 1 : 0;
      if (kind == pass) move(staging_ / name, dir_ / name);
    }
  }
  sync_directory(dir_);
  done_ = true;
  fs::remove_all(old, ec);
  fs::remove_all(staging_, ec);
  old_registration.reset();
  registration_.reset();
}

}  // namespace lathe
