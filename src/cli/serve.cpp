// `lathe serve`: the OpenAI-compatible HTTP server (src/server/). This file only parses and
// checks the flags; the server is server::serve().
#include <fmt/format.h>

#include <cctype>
#include <fstream>
#include <memory>
#include <string>

#include "cli/commands.hpp"
#include "cli/format.hpp"
#include "cli/generation.hpp"
#include "lathe/error.hpp"
#ifdef LATHE_HAVE_SERVER
#include "server/http_server.hpp"
#endif

namespace lathe::cli {
namespace {

struct ServeArgs {
  std::string model, template_file, host = "127.0.0.1", api_key, api_key_file, max_body_size = "32M", cors_origin, alias;
  int64_t port = 8080, parallel = 4, max_queue = 64;
  double shutdown_timeout = 5;
  bool no_webui = false;
  SessionArgs session;
  std::vector<std::string> loras;
  ControlVectorArgs control_vectors;
  SaeArgs sae;
};

#ifdef LATHE_HAVE_SERVER
std::string read_key_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw IoError(fmt::format("--api-key-file {}: cannot be read", path));
  std::string key;
  std::getline(in, key);
  while (!key.empty() && std::isspace(static_cast<unsigned char>(key.back()))) key.pop_back();
  if (key.empty()) throw InvalidArgumentError(fmt::format("--api-key-file {}: the first line (the key) is empty", path));
  return key;
}

#endif

int run_serve(const ServeArgs& args) {
#ifndef LATHE_HAVE_SERVER
  (void)args;
  throw UnsupportedError("this lathe was built without `lathe serve` (cpp-httplib was not found): install "
                         "libcpp-httplib-dev and rebuild (scripts/setup.sh does both)");
#else
  if (args.port < 0 || args.port > 65535)
    throw InvalidArgumentError(fmt::format("--port {} is out of range: 0..65535 (0 = any free port)", args.port));
  if (args.parallel < 1 || args.parallel > 512)
    throw InvalidArgumentError(fmt::format("--parallel {} is out of range: 1..512 sequences at once", args.parallel));
  if (args.max_queue < 0 || args.max_queue > 100000)
    throw InvalidArgumentError(fmt::format("--max-queue {} is out of range: 0..100000 waiting requests", args.max_queue));
  if (!(args.shutdown_timeout >= 0 && args.shutdown_timeout <= 3600))
    throw InvalidArgumentError(fmt::format("--shutdown-timeout {} is out of range: 0..3600 seconds", args.shutdown_timeout));
  if (!args.api_key.empty() && !args.api_key_file.empty())
    throw InvalidArgumentError("--api-key and --api-key-file both given: use one (the file keeps the key out of `ps`)");
  server::ServerOptions options;
  options.model = args.model;
  options.chat_template = args.template_file;
  options.loras = resolve_loras(args.loras);
  check_sae_flags(args.sae);  // before the model loads; the hooks themselves need it loaded
  options.hooks = [cv = args.control_vectors, sae = args.sae](const Model& model) {
    return resolve_hooks(cv, sae, model);  // nullptr without --control-vector and --sae
  };
  options.host = args.host;
  options.port = static_cast<int>(args.port);
  const SessionOptions session = resolve_session(args.session);
  options.service.n_slots = static_cast<uint32_t>(args.parallel);
  options.service.n_ctx = session.n_ctx;
  options.service.compute = session.compute;
  options.service.max_queue = static_cast<size_t>(args.max_queue);
  options.api_key = args.api_key_file.empty() ? args.api_key : read_key_file(args.api_key_file);
  options.max_body_bytes = parse_size(args.max_body_size, "--max-body-size", uint64_t{64} << 30);
  // A given budget is the server's (the context shrinks to fit while the weights do, else layers
  // stream); auto streams what does not fit in the free memory at the asked context.
  if (session.compute.vram_budget != kVramBudgetAuto) {
    options.service.vram_budget = session.compute.vram_budget;
    options.service.compute.vram_budget = 0;
  }
  options.cors_origin = args.cors_origin;
  options.webui = !args.no_webui;
  options.alias = args.alias;
  options.shutdown_grace = std::chrono::milliseconds(static_cast<int64_t>(args.shutdown_timeout * 1000));
  return server::serve(options);
#endif
}

}  // namespace

Runner add_serve(CLI::App& app) {
  auto args = std::make_shared<ServeArgs>();
  CLI::App* cmd = app.add_subcommand(
      "serve", "OpenAI-compatible HTTP server with continuous batching, streaming and a web chat page (docs/SERVER.md)");
  cmd->add_option("-m,--model", args->model, "GGUF file, model directory, or Hugging Face org/name")->required();
  cmd->add_option("--host", args->host, "address to listen on (loopback by default; 0.0.0.0 for every interface)")
      ->capture_default_str();
  cmd->add_option("--port", args->port, "TCP port (0 = any free port, printed at start)")->capture_default_str();
  cmd->add_option("--parallel,--n-parallel", args->parallel, "sequences generated at once (KV cache slots)")
      ->capture_default_str();
  cmd->add_option("--max-queue", args->max_queue, "requests that may wait for a slot; more are answered 503")
      ->capture_default_str();
  cmd->add_option("--api-key", args->api_key, "key clients must send (Authorization: Bearer KEY or X-Api-Key)");
  cmd->add_option("--api-key-file", args->api_key_file, "file whose first line is the key");
  cmd->add_option("--max-body-size", args->max_body_size, "largest request body (bytes, or with K/M/G); larger: 413")
      ->capture_default_str();
  cmd->add_option("--cors-origin", args->cors_origin, "allow browser pages from this origin (or *) to call the API");
  cmd->add_flag("--no-webui", args->no_webui, "do not serve the web chat page at /");
  cmd->add_option("--alias", args->alias, "the model's name in answers and /v1/models (default: the file's name)");
  cmd->add_option("--template", args->template_file, "Jinja chat template file to use instead of the model's");
  add_lora_flags(*cmd, args->loras);
  add_control_vector_flags(*cmd, args->control_vectors);
  add_sae_flags(*cmd, args->sae);
  cmd->add_option("--shutdown-timeout", args->shutdown_timeout,
                  "seconds running requests may take to finish after SIGINT/SIGTERM before they are cancelled")
      ->capture_default_str();
  add_session_flags(*cmd, args->session, /*with_kv_type=*/true);
  return [args] { return run_serve(*args); };
}

}  // namespace lathe::cli
