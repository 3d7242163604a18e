// A read-only memory map of a whole file. Tensor data is used in place from the map (no copy).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>

#include "io/temp_files.hpp"

namespace lathe {

class MappedFile {
 public:
  MappedFile() = default;
  // Throws NotFoundError (missing) or IoError (unreadable, a directory, mmap failure), naming the path.
  explicit MappedFile(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  std::span<const uint8_t> bytes() const noexcept { return {data_, size_}; }
  const uint8_t* data() const noexcept { return data_; }
  size_t size() const noexcept { return size_; }
  const std::filesystem::path& path() const noexcept { return path_; }

 private:
  void release() noexcept;
  std::filesystem::path path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Writes a file atomically: the data goes to "<path>.tmp.<pid>" and is renamed over <path> only
// once fully written and flushed, so a failed or interrupted write never destroys an existing file.
// The temporary is registered with io/temp_files.hpp (removed when SIGINT/SIGTERM/... end the
// process), and creating a writer first removes "<path>.tmp.<pid>" leftovers of dead processes.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::filesystem::path path);
  ~AtomicFileWriter();  // removes the temporary file unless commit() succeeded
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, size_t n);
  void write_zeros(size_t n);
  uint64_t position() const noexcept { return position_; }
  void commit();

 private:
  std::filesystem::path path_, tmp_path_;
  TemporaryRegistration registration_;
  int fd_ = -1;
  uint64_t position_ = 0;
  bool committed_ = false, paused_ = false;
};

// fsync() of a directory, so that renames and removals in it survive a power loss (best effort).
void sync_directory(const std::filesystem::path& dir) noexcept;

}  // namespace lathe
