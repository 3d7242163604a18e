// `lathe serve`: the HTTP front of the inference service (cpp-httplib). Routes, the API key,
// CORS, body limits, OpenAI error objects, Server-Sent Events, cancellation of requests whose
// client disconnected, back-pressure (503 + Retry-After) and a graceful stop on SIGINT/SIGTERM.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "server/inference.hpp"

namespace lathe::server {

struct ServerOptions {
  std::filesystem::path model;
  std::filesystem::path chat_template;  // replaces the model's own (--template)
  std::vector<LoraSpec> loras;          // merged into the weights at load (--lora)
  // Makes the residual hooks every request runs (--control-vector, --sae) once the model is
  // loaded (they are checked against it); empty or returning nullptr: none.
  std::function<std::shared_ptr<ResidualHooks>(const Model&)> hooks;
  std::string host = "127.0.0.1";
  int port = 8080;
  ServiceOptions service;
  std::string api_key;                  // empty: no key needed
  size_t max_body_bytes = 32u << 20;    // larger bodies: 413
  std::string cors_origin;              // empty: no CORS headers
  bool webui = true;
  std::string alias;                    // the model's name in answers; default: the file's stem
  std::chrono::milliseconds shutdown_grace{5000};
};

// Binds, loads the model (GET /health answers 503 meanwhile), serves until SIGINT/SIGTERM, then
// stops taking connections, lets running requests finish for shutdown_grace, cancels the rest and
// returns 0. Throws lathe::Error when the address cannot be bound or the model cannot be loaded.
int serve(const ServerOptions& options);

}  // namespace lathe::server
