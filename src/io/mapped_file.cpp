#include "io/mapped_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <thread>
#include <cstring>
#include <fmt/format.h>
#include <utility>

#include "lathe/error.hpp"

namespace lathe {

MappedFile::MappedFile(const std::filesystem::path& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT)
      throw NotFoundError(fmt::format("{}: no such file; check the path (or run scripts/fetch-model.sh for the default model)",
                                      path.string()));
    throw IoError(fmt::format("{}: cannot open: {}; check permissions", path.string(), std::strerror(err)));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw IoError(fmt::format("{}: not a regular file; pass a model file or a model directory", path.string()));
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      throw IoError(fmt::format("{}: cannot memory-map {} bytes: {}", path.string(), size_, std::strerror(err)));
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
}

MappedFile::~MappedFile() { release(); }

MappedFile::MappedFile(MappedFile&& other) noexcept
    : path_(std::move(other.path_)), data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    release();
    path_ = std::move(other.path_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

void MappedFile::release() noexcept {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
  data_ = nullptr;
  size_ = 0;
}

AtomicFileWriter::AtomicFileWriter(std::filesystem::path path)
    : path_(std::move(path)), tmp_path_(temporary_path_for(path_)) {
  sweep_stale_temporaries(path_.parent_path(), {path_.filename().string()});
  registration_ = TemporaryRegistration(tmp_path_, TemporaryRegistration::Kind::File);
  fd_ = ::open(tmp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0)
    throw IoError(fmt::format("{}: cannot create: {}; check that the directory exists and is writable",
                              tmp_path_.string(), std::strerror(errno)));
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) {
    std::error_code ec;
    std::filesystem::remove(tmp_path_, ec);
  }
  registration_.reset();
}

void AtomicFileWriter::write(const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd_, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw IoError(fmt::format("{}: write failed after {} bytes: {}; check free disk space", tmp_path_.string(),
                                position_, std::strerror(errno)));
    }
    p += w;
    n -= static_cast<size_t>(w);
    position_ += static_cast<uint64_t>(w);
  }
  if (!paused_ && position_ > 0) {  // tests only (LATHE_TEST_WRITE_PAUSE_MS): a write caught half-way
    paused_ = true;
    if (const unsigned ms = test_write_pause_ms(tmp_path_.string()); ms > 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  }
}

void AtomicFileWriter::write_zeros(size_t n) {
  static constexpr uint8_t zeros[4096] = {};
  while (n > 0) {
    const size_t chunk = n < sizeof(zeros) ? n : sizeof(zeros);
    write(zeros, chunk);
    n -= chunk;
  }
}

void AtomicFileWriter::commit() {
  if (::fsync(fd_) != 0 || ::close(fd_) != 0) {
    fd_ = -1;
    throw IoError(fmt::format("{}: flushing failed: {}; check free disk space", tmp_path_.string(), std::strerror(errno)));
  }
  fd_ = -1;
  std::error_code ec;
  std::filesystem::rename(tmp_path_, path_, ec);
  if (ec) throw IoError(fmt::format("{}: cannot rename into place: {}", path_.string(), ec.message()));
  committed_ = true;
  registration_.reset();
  sync_directory(path_.parent_path());
}

void sync_directory(const std::filesystem::path& dir) noexcept {
  const std::filesystem::path where = dir.empty() ? std::filesystem::path(".") : dir;
  const int fd = ::open(where.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

}  // namespace lathe
