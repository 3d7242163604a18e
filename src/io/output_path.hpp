// The checks every command that writes a file or a directory makes before any expensive work
// (quantize, convert, cvector, ablate --out/--journal/--plot), in one place, and the directory
// export that never lets a reader see a mix of two exports.
//
// check_output() refuses, each with an error naming the flag and the path and saying what to do:
//  * an empty path;
//  * an output that is one of the command's inputs: the same file by device and inode (so also
//    through a symbolic link or a hard link), or the same path once resolved; an output that
//    already exists inside an input directory (a file of that model); for a directory output, an
//    input inside it that the export would replace or remove;
//  * an existing output without force (a directory output may be an empty directory); a file
//    output that is a directory, a directory output that is not a directory;
//  * a missing parent directory (it is not created), one that is not a directory, or one the
//    process cannot write (the existing directory itself for a directory export written in place).
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "io/temp_files.hpp"

namespace lathe {

struct OutputRequest {
  enum class Kind { File, Directory };
  std::string flag;  // how the user named it, for messages: "-o/--output", "--journal", "quantize: output"
  std::filesystem::path path;
  Kind kind = Kind::File;
  bool force = false;  // an existing output may be replaced
  // What the command reads, as (how the message names it, path): ("the input model", m.gguf),
  // ("--positive", p.txt). Other outputs of the same command belong here too.
  std::vector<std::pair<std::string, std::filesystem::path>> inputs;
  // Directory outputs: the names of files a write into an existing directory replaces or removes
  // (besides the safetensors weight names, which always count).
  std::function<bool(std::string_view)> managed;
};

// Throws InvalidArgumentError, NotFoundError (missing parent) or IoError (not writable).
void check_output(const OutputRequest& request);

// Whether a and b name the same file: device and inode when both exist (links included), else the
// same path after std::filesystem::weakly_canonical.
bool same_file(const std::filesystem::path& a, const std::filesystem::path& b);

// model.safetensors, model.safetensors.index.json, model-NNNNN-of-NNNNN.safetensors: the files a
// Hugging Face loader reads weights from (transformers prefers model.safetensors when present).
bool is_safetensors_weight_name(std::string_view name);

// Writes a directory export (Hugging Face layout) as one unit. The files are written into
// staging(); commit() puts them in place:
//  * a new directory: staging is the sibling "<dir>.tmp.<pid>", renamed to <dir> (atomic);
//  * an existing directory: staging is "<dir>/.lathe-staging.tmp.<pid>"; commit() first moves the
//    previous export's entry points (model.safetensors.index.json, then model.safetensors) aside,
//    then its other weight files and the managed files the new export does not have, then moves in
//    the new side files, the new shards and last the new entry point. At every moment a reader
//    finds the complete previous export, no weights at all (and fails), or the complete new
//    export — never a mix. Files that are neither weights nor managed are left alone. Signals are
//    deferred while the renames run.
// Staging (and the "<dir>/.lathe-old.tmp.<pid>" holding the previous export during commit) is a
// registered temporary: removed on SIGINT/SIGTERM, on an exception, and by the next run's sweep
// when the process died.
class StagedDirectory {
 public:
  explicit StagedDirectory(std::filesystem::path dir);
  ~StagedDirectory();
  StagedDirectory(const StagedDirectory&) = delete;
  StagedDirectory& operator=(const StagedDirectory&) = delete;

  const std::filesystem::path& staging() const noexcept { return staging_; }
  // `managed` as in OutputRequest. `after_each_move` (tests) is called after every rename into or
  // out of the directory, to look at each state a reader could see. Throws IoError naming what
  // could not be moved and where the previous export's files are.
  void commit(const std::function<bool(std::string_view)>& managed = {},
              const std::function<void()>& after_each_move = {});

 private:
  void commit_in_place(const std::function<bool(std::string_view)>& managed, const std::function<void()>& after_each_move);
  std::filesystem::path dir_, staging_;
  bool in_place_ = false, done_ = false;
  TemporaryRegistration registration_;
};

}  // namespace lathe
