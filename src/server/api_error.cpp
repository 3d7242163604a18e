#include "server/api_error.hpp"

#include "lathe/generate.hpp"

namespace lathe::server {
namespace {

ErrorCode code_for_status(int status) {
  if (status == 404) return ErrorCode::NotFound;
  if (status >= 400 && status < 500) return ErrorCode::InvalidArgument;
  return ErrorCode::Internal;
}

nlohmann::json null_if_empty(const std::string& s) { return s.empty() ? nlohmann::json(nullptr) : nlohmann::json(s); }

}  // namespace

ApiError::ApiError(int status, std::string type, std::string message, std::string param, std::string code)
    : Error(code_for_status(status), message),
      status_(status),
      type_(std::move(type)),
      param_(std::move(param)),
      code_(std::move(code)) {}

nlohmann::json ApiError::body() const { return error_body(what(), type_, param_, code_); }

ApiError bad_request(const std::string& param, const std::string& message, const std::string& code) {
  return ApiError(400, "invalid_request_error", param.empty() ? message : param + ": " + message, param, code);
}

nlohmann::json error_body(const std::string& message, const std::string& type, const std::string& param,
                          const std::string& code) {
  return {{"error", {{"message", message}, {"type", type}, {"param", null_if_empty(param)}, {"code", null_if_empty(code)}}}};
}

ApiError api_error_from(const Error& error) {
  if (const auto* context = dynamic_cast<const ContextLengthError*>(&error))
    return ApiError(400, "invalid_request_error", context->what(), "messages", "context_length_exceeded");
  if (error.code() == ErrorCode::InvalidArgument || error.code() == ErrorCode::Unsupported)
    return ApiError(400, "invalid_request_error", error.what(), "", error_code_name(error.code()));
  return ApiError(500, "server_error", error.what(), "", error_code_name(error.code()));
}

}  // namespace lathe::server
