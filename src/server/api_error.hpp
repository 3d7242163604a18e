// Errors a server request answers with: an HTTP status and OpenAI's error object
// {"error": {"message", "type", "param", "code"}}. Part of lathe's one error hierarchy (the
// lathe::ErrorCode follows the status: 4xx invalid argument or not found, 5xx internal).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "lathe/error.hpp"

namespace lathe::server {

class ApiError : public Error {
 public:
  // type: OpenAI's ("invalid_request_error", "authentication_error", "not_found_error",
  // "server_error", ...); param: the request field at fault ("" when none); code: a stable
  // machine-readable reason ("context_length_exceeded", "invalid_value", ...; "" when none).
  ApiError(int status, std::string type, std::string message, std::string param = {}, std::string code = {});
  int status() const noexcept { return status_; }
  const std::string& type() const noexcept { return type_; }
  const std::string& param() const noexcept { return param_; }
  const std::string& error_code() const noexcept { return code_; }
  nlohmann::json body() const;

 private:
  int status_;
  std::string type_, param_, code_;
};

// 400 invalid_request_error naming the field: "messages[1].role: 'robot' is not a role; ...".
ApiError bad_request(const std::string& param, const std::string& message, const std::string& code = "invalid_value");

// OpenAI's error object for any status/message (used for errors raised outside a handler too).
nlohmann::json error_body(const std::string& message, const std::string& type, const std::string& param = {},
                          const std::string& code = {});

// The error object for a lathe::Error escaping generation (invalid argument -> 400, others 500).
ApiError api_error_from(const Error& error);

}  // namespace lathe::server
