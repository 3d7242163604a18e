// lathe's one exception hierarchy. Every error carries a code (for programs) and a message that
// names the file, tensor, layer or value at fault and says what to do (for people).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace lathe {

enum class ErrorCode : int {
  InvalidArgument = 1,  // a caller-supplied value is out of range or malformed
  Io = 2,               // a file could not be opened, read, mapped or written
  Format = 3,           // a file's content is malformed (bad magic, truncated, out of bounds...)
  Unsupported = 4,      // well-formed input that lathe does not handle (version, type, architecture)
  NotFound = 5,         // a named file, tensor, key or model does not exist
  OutOfMemory = 6,      // an allocation (host or device) failed
  Internal = 7,         // a bug in lathe: please report
  Device = 8,           // a GPU call failed (no device, driver error, kernel fault)
};

// "invalid_argument", "io", ... : stable names for logs and JSON output.
const char* error_code_name(ErrorCode code) noexcept;

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

class InvalidArgumentError : public Error {
 public:
  explicit InvalidArgumentError(const std::string& m) : Error(ErrorCode::InvalidArgument, m) {}
};
class IoError : public Error {
 public:
  explicit IoError(const std::string& m) : Error(ErrorCode::Io, m) {}
};
// Malformed file content. Build the message with format_error_message() so that every one names
// the file, the field or tensor, the byte offset, and the remedy.
class FormatError : public Error {
 public:
  explicit FormatError(const std::string& m) : Error(ErrorCode::Format, m) {}
  FormatError(const std::string& file, const std::string& field, uint64_t offset, const std::string& problem,
              const std::string& remedy);
};
class UnsupportedError : public Error {
 public:
  explicit UnsupportedError(const std::string& m) : Error(ErrorCode::Unsupported, m) {}
};
class NotFoundError : public Error {
 public:
  explicit NotFoundError(const std::string& m) : Error(ErrorCode::NotFound, m) {}
};
class OutOfMemoryError : public Error {
 public:
  explicit OutOfMemoryError(const std::string& m) : Error(ErrorCode::OutOfMemory, m) {}
};
// A GPU runtime failure other than running out of memory: no usable device, a driver error, a
// kernel fault. The message names the operation and the device and says what to check.
class DeviceError : public Error {
 public:
  explicit DeviceError(const std::string& m) : Error(ErrorCode::Device, m) {}
};
class InternalError : public Error {
 public:
  explicit InternalError(const std::string& m) : Error(ErrorCode::Internal, m) {}
};

// "<file>: <field> at offset <offset>: <problem>; <remedy>"
std::string format_error_message(const std::string& file, const std::string& field, uint64_t offset,
                                 const std::string& problem, const std::string& remedy);

}  // namespace lathe
