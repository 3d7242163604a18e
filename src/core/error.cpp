#include "lathe/error.hpp"

#include <fmt/format.h>

namespace lathe {

const char* error_code_name(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::InvalidArgument: return "invalid_argument";
    case ErrorCode::Io: return "io";
    case ErrorCode::Format: return "format";
    case ErrorCode::Unsupported: return "unsupported";
    case ErrorCode::NotFound: return "not_found";
    case ErrorCode::OutOfMemory: return "out_of_memory";
    case ErrorCode::Internal: return "internal";
    case ErrorCode::Device: return "device";
  }
  return "unknown";
}

std::string format_error_message(const std::string& file, const std::string& field, uint64_t offset,
                                 const std::string& problem, const std::string& remedy) {
  return fmt::format("{}: {} at offset {}: {}; {}", file, field, offset, problem, remedy);
}

FormatError::FormatError(const std::string& file, const std::string& field, uint64_t offset,
                         const std::string& problem, const std::string& remedy)
    : Error(ErrorCode::Format, format_error_message(file, field, offset, problem, remedy)) {}

}  // namespace lathe
