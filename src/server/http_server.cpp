#include "server/http_server.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <fmt/format.h>
#include <httplib.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "api/model_impl.hpp"
#include "server/api_error.hpp"
#include "server/request.hpp"
#include "server/response.hpp"
#include "server/webui.hpp"

namespace lathe::server {
namespace {

using httplib::DataSink;
using httplib::Request;
using httplib::Response;
using nlohmann::json;
using Clock = std::chrono::steady_clock;
constexpr auto kPoll = std::chrono::milliseconds(100);

// ---- the client's connection ----------------------------------------------------------------

// The address of one end of a socket as text and port.
bool socket_end(int fd, bool peer, std::string& address, int& port) {
  sockaddr_storage storage{};
  socklen_t length = sizeof storage;
  auto* addr = reinterpret_cast<sockaddr*>(&storage);
  if ((peer ? getpeername(fd, addr, &length) : getsockname(fd, addr, &length)) != 0) return false;
  char text[INET6_ADDRSTRLEN] = {};
  if (storage.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&storage);
    inet_ntop(AF_INET, &in->sin_addr, text, sizeof text);
    port = ntohs(in->sin_port);
  } else if (storage.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&storage);
    inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text);
    port = ntohs(in6->sin6_port);
  } else {
    return false;
  }
  address = text;
  return true;
}

// Watches whether the client of a request hung up. cpp-httplib 0.11 (Debian 12's) tells a handler
// nothing of its connection, and notices a closed one only when a write fails — never while a
// non-streamed answer is being generated. So the connection's socket is found once per
// generation request by its two ends (the request's local and remote address and port), and
// polled for POLLRDHUP while the answer is generated.
class ClientWatch {
 public:
  explicit ClientWatch(const Request& req) : fd_(find(req)) {}
  bool gone() const {
    if (fd_ < 0) return false;
    pollfd p{fd_, static_cast<short>(POLLRDHUP), 0};
    return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
  }

 private:
  static int find(const Request& req) {
    DIR* dir = opendir("/proc/self/fd");
    if (dir == nullptr) return -1;
    int found = -1;
    while (dirent* entry = readdir(dir)) {
      char* end = nullptr;
      const long fd = std::strtol(entry->d_name, &end, 10);
      if (end == entry->d_name || *end != '\0') continue;
      struct stat st {};
      if (fstat(static_cast<int>(fd), &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
      std::string local, remote;
      int local_port = -1, remote_port = -1;
      if (!socket_end(static_cast<int>(fd), false, local, local_port) || local_port != req.local_port) continue;
      if (!socket_end(static_cast<int>(fd), true, remote, remote_port) || remote_port != req.remote_port) continue;
      if (remote != req.remote_addr) continue;
      found = static_cast<int>(fd);
      break;
    }
    closedir(dir);
    return found;
  }
  int fd_;
};

// ---- answers --------------------------------------------------------------------------------

void send_json(Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump(body) + "\n", "application/json");
}

void send_error(Response& res, const ApiError& e) {
  if (e.status() == 503) res.set_header("Retry-After", "1");
  if (e.status() == 401) res.set_header("WWW-Authenticate", "Bearer");
  send_json(res, e.status(), e.body());
}

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string make_id(const char* prefix) {
  static std::atomic<uint64_t> counter{0};
  return fmt::format("{}-{:x}{:06x}", prefix, unix_now(), counter.fetch_add(1));
}

bool keys_equal(std::string_view a, std::string_view b) {  // without an early exit (timing)
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  return diff == 0;
}

// ---- the server -----------------------------------------------------------------------------

class HttpServer {
 public:
  explicit HttpServer(const ServerOptions& options) : options_(options) {}
  int run();

 private:
  void routes();
  InferenceService& ready_service();
  void guarded(Response& res, const std::function<void()>& handler);
  void completion(const Request& req, Response& res, bool chat);
  void answer_whole(const Request& req, Response& res, const std::shared_ptr<Job>& job, const CompletionRequest& r,
                    const ResponseHead& head);
  void answer_stream(const Request& req, Response& res, const std::shared_ptr<Job>& job, const CompletionRequest& r,
                     const ResponseHead& head);
  bool needs_key(const Request& req) const;
  void log_request(const Request& req, int status, const std::string& detail) const;

  ServerOptions options_;
  httplib::Server http_;
  std::unique_ptr<InferenceService> service_owner_;
  std::atomic<InferenceService*> service_{nullptr};
  std::string alias_;
  int64_t created_ = unix_now();
};

InferenceService& HttpServer::ready_service() {
  InferenceService* service = service_.load();
  if (service == nullptr) throw ApiError(503, "server_error", "the model is still loading; retry shortly", "", "loading");
  return *service;
}

void HttpServer::log_request(const Request& req, int status, const std::string& detail) const {
  std::fprintf(stderr, "lathe serve: %s %s %d%s%s\n", req.method.c_str(), req.path.c_str(), status,
               detail.empty() ? "" : " ", detail.c_str());
}

// Every handler's errors become OpenAI error objects: ApiError as it says, other lathe errors by
// their code, anything else a 500 (the server keeps running).
void HttpServer::guarded(Response& res, const std::function<void()>& handler) {
  try {
    handler();
  } catch (const ApiError& e) {
    send_error(res, e);
  } catch (const Error& e) {
    send_error(res, api_error_from(e));
  } catch (const std::exception& e) {
    send_error(res, ApiError(500, "server_error", fmt::format("internal error: {}", e.what()), "", "internal"));
  }
}

bool HttpServer::needs_key(const Request& req) const {
  if (options_.api_key.empty() || req.method == "OPTIONS") return false;
  return req.path != "/health" && req.path != "/" && req.path != "/index.html";
}

Usage usage_of(const Job& job) {
  const GenerateResult& r = job.result();
  return {job.n_prompt, r.n_cached, static_cast<uint32_t>(r.tokens.size())};
}

// A job that did not finish normally: its error object (nullopt when it did).
std::optional<ApiError> job_error(const Job& job) {
  if (job.result().stop == StopReason::Failed)
    return ApiError(500, "server_error", fmt::format("generation failed: {}", job.error()), "", "generation_failed");
  if (job.result().stop == StopReason::Cancelled)
    return ApiError(503, "server_error", "the request was cancelled: the server is shutting down", "", "cancelled");
  return std::nullopt;
}

void HttpServer::completion(const Request& req, Response& res, bool chat) {
  InferenceService& service = ready_service();
  const nlohmann::ordered_json body = parse_body(req.body);
  const CompletionRequest r = chat ? parse_chat_request(body) : parse_completion_request(body);
  const std::shared_ptr<Job> job = service.submit(r);
  const ResponseHead head{make_id(chat ? "chatcmpl" : "cmpl"), unix_now(), alias_};
  if (r.stream) answer_stream(req, res, job, r, head);
  else answer_whole(req, res, job, r, head);
}

void HttpServer::answer_whole(const Request& req, Response& res, const std::shared_ptr<Job>& job,
                              const CompletionRequest& r, const ResponseHead& head) {
  InferenceService& service = ready_service();
  const ClientWatch watch(req);
  std::string text;
  std::vector<LogprobEntry> logprobs;
  for (;;) {
    Job::Update update = job->take(kPoll);
    text += update.text;
    for (auto& entry : update.logprobs) logprobs.push_back(std::move(entry));
    if (update.done) break;
    if (watch.gone()) {  // nobody is waiting for this answer any more
      service.cancel(*job);
      log_request(req, 499, "client disconnected: cancelled");
      res.status = 499;
      return;
    }
  }
  if (auto error = job_error(*job)) return send_error(res, *error);
  const std::string finish = finish_reason(job->result().stop);
  std::optional<std::vector<LogprobEntry>> lp;
  if (job->want_logprobs) lp = std::move(logprobs);
  const Usage usage = usage_of(*job);
  send_json(res, 200, r.chat ? chat_completion(head, text, finish, usage, lp) : text_completion(head, text, finish, usage, lp));
  log_request(req, 200, fmt::format("prompt {} (cached {}), generated {}, {}", usage.prompt_tokens, usage.cached_tokens,
                                    usage.completion_tokens, finish));
}

void HttpServer::answer_stream(const Request& req, Response& res, const std::shared_ptr<Job>& job,
                               const CompletionRequest& r, const ResponseHead& head) {
  InferenceService* service = &ready_service();
  const ClientWatch watch(req);
  const bool chat = r.chat, include_usage = r.include_usage;
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  res.set_chunked_content_provider(
      "text/event-stream",
      [service, job, watch, chat, include_usage, head, req_line = req.method + " " + req.path](size_t, DataSink& sink) {
        auto send = [&](const std::string& event) { return sink.write(event.data(), event.size()); };
        auto lost = [&] {
          service->cancel(*job);
          std::fprintf(stderr, "lathe serve: %s client disconnected: cancelled\n", req_line.c_str());
          return false;
        };
        if (chat && !send(sse_event(chat_chunk(head, {{"role", "assistant"}, {"content", ""}}, nullptr, std::nullopt))))
          return lost();
        size_t offset = 0;
        for (;;) {
          Job::Update update = job->take(kPoll);
          if (!update.text.empty() || !update.logprobs.empty()) {
            json lp = nullptr;
            if (job->want_logprobs)
              lp = chat ? chat_logprobs_json(update.logprobs) : text_logprobs_json(update.logprobs, offset);
            offset += update.text.size();
            const json chunk = chat ? chat_chunk(head, {{"content", update.text}}, lp, std::nullopt)
                                    : text_chunk(head, update.text, lp, std::nullopt);
            if (!send(sse_event(chunk))) return lost();
          }
          if (update.done) break;
          if (watch.gone()) return lost();
        }
        if (auto error = job_error(*job)) {
          send(sse_event(error->body()));
        } else {
          const std::string finish = finish_reason(job->result().stop);
          send(sse_event(chat ? chat_chunk(head, json::object(), nullptr, finish) : text_chunk(head, "", nullptr, finish)));
          if (include_usage) send(sse_event(usage_chunk(head, chat, usage_of(*job))));
          const Usage usage = usage_of(*job);
          std::fprintf(stderr, "lathe serve: %s 200 (stream) prompt %u (cached %u), generated %u, %s\n",
                       req_line.c_str(), usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens,
                       finish.c_str());
        }
        send(sse_done());
        sink.done();
        return true;
      },
      [service, job](bool success) {
        if (!success) service->cancel(*job);
      });
}

void HttpServer::routes() {
  http_.Post("/v1/chat/completions", [this](const Request& req, Response& res) {
    guarded(res, [&] { completion(req, res, true); });
  });
  http_.Post("/v1/completions", [this](const Request& req, Response& res) {
    guarded(res, [&] { completion(req, res, false); });
  });
  http_.Get("/v1/models", [this](const Request&, Response& res) {
    guarded(res, [&] {
      json model = {{"id", alias_}, {"object", "model"}, {"created", created_}, {"owned_by", "lathe"}};
      if (InferenceService* s = service_.load()) {
        const ModelSummary summary = s->model().summary();
        model["meta"] = {{"architecture", summary.architecture}, {"n_vocab", summary.n_vocab},
                         {"n_ctx_train", summary.n_ctx_train}, {"n_ctx", s->n_ctx()}, {"n_slots", s->n_slots()}};
      }
      send_json(res, 200, {{"object", "list"}, {"data", json::array({model})}});
    });
  });
  http_.Get("/health", [this](const Request&, Response& res) {
    InferenceService* s = service_.load();
    if (s == nullptr) return send_json(res, 503, {{"status", "loading"}});
    if (!s->healthy()) return send_json(res, 503, {{"status", "error"}});
    send_json(res, 200, {{"status", "ok"}});
  });
  http_.Get("/metrics", [this](const Request&, Response& res) {
    guarded(res, [&] { res.set_content(ready_service().metrics().text(), "text/plain; version=0.0.4"); });
  });
  http_.Post("/tokenize", [this](const Request& req, Response& res) {
    guarded(res, [&] {
      const Model& model = ready_service().model();
      const nlohmann::ordered_json body = parse_body(req.body);
      if (!body.contains("content") || !body["content"].is_string())
        throw bad_request("content", "is required (the text to tokenize)", "missing_field");
      auto flag = [&](const char* name, bool fallback) {
        if (!body.contains(name) || body[name].is_null()) return fallback;
        if (!body[name].is_boolean()) throw bad_request(name, "must be true or false");
        return body[name].get<bool>();
      };
      const auto ids = model.tokenize(body["content"].get<std::string>(), flag("add_special", false),
                                      flag("parse_special", true));
      json tokens = json::array();
      const bool pieces = flag("with_pieces", false);
      for (TokenId id : ids) {
        if (pieces) tokens.push_back({{"id", id}, {"piece", model.detokenize(std::vector<TokenId>{id})}});
        else tokens.push_back(id);
      }
      send_json(res, 200, {{"tokens", tokens}});
    });
  });
  http_.Post("/detokenize", [this](const Request& req, Response& res) {
    guarded(res, [&] {
      const Model& model = ready_service().model();
      const nlohmann::ordered_json body = parse_body(req.body);
      if (!body.contains("tokens") || !body["tokens"].is_array())
        throw bad_request("tokens", "is required (an array of token ids)", "missing_field");
      std::vector<TokenId> ids;
      for (size_t i = 0; i < body["tokens"].size(); ++i) {
        const json& id = body["tokens"][i];
        if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= model.n_vocab())
          throw bad_request(fmt::format("tokens[{}]", i), fmt::format("must be a token id in 0..{}", model.n_vocab() - 1));
        ids.push_back(id.get<TokenId>());
      }
      send_json(res, 200, {{"content", model.detokenize(ids)}});
    });
  });
  if (options_.webui) {
    http_.Get("/", [](const Request&, Response& res) { res.set_content(std::string(webui_html()), "text/html; charset=utf-8"); });
  }
  http_.Options(R"(/.*)", [](const Request&, Response& res) { res.status = 204; });

  http_.set_pre_routing_handler([this](const Request& req, Response& res) {
    if (!needs_key(req)) return httplib::Server::HandlerResponse::Unhandled;
    std::string given = req.get_header_value("X-Api-Key");
    const std::string auth = req.get_header_value("Authorization");
    if (auth.rfind("Bearer ", 0) == 0) given = auth.substr(7);
    if (keys_equal(given, options_.api_key)) return httplib::Server::HandlerResponse::Unhandled;
    send_error(res, ApiError(401, "authentication_error",
                             given.empty() ? "an API key is required: send it as 'Authorization: Bearer KEY'"
                                           : "the API key is not valid",
                             "", "invalid_api_key"));
    log_request(req, 401, "");
    return httplib::Server::HandlerResponse::Handled;
  });
  http_.set_post_routing_handler([this](const Request& req, Response& res) {
    if (options_.cors_origin.empty()) return;
    res.set_header("Access-Control-Allow-Origin", options_.cors_origin);
    res.set_header("Vary", "Origin");
    if (req.method == "OPTIONS") {
      res.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
      res.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type, X-Api-Key");
      res.set_header("Access-Control-Max-Age", "600");
    }
  });
  // httplib's own refusals (no route, a body over the limit, a malformed request) in OpenAI's form.
  http_.set_error_handler([this](const Request& req, Response& res) {
    if (!res.body.empty()) return;
    if (res.status == 404)
      return send_error(res, ApiError(404, "not_found_error", fmt::format("no route {} {}", req.method, req.path), "",
                                      "not_found"));
    if (res.status == 413)
      return send_error(res, ApiError(413, "invalid_request_error",
                                      fmt::format("the request body is larger than {} bytes (--max-body-size)",
                                                  options_.max_body_bytes),
                                      "body", "body_too_large"));
    send_error(res, ApiError(res.status, "invalid_request_error",
                             fmt::format("the request could not be served (HTTP {})", res.status)));
  });
  http_.set_exception_handler([](const Request&, Response& res, std::exception_ptr) {
    send_error(res, ApiError(500, "server_error", "internal error", "", "internal"));
  });
}

int HttpServer::run() {
  // Signals are taken by sigwait below, on this thread only: every thread started from here on
  // (httplib's, the engine's) inherits the block.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  alias_ = options_.alias.empty() ? options_.model.stem().string() : options_.alias;
  const size_t threads = options_.service.n_slots + options_.service.max_queue + 16;
  http_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http_.set_payload_max_length(options_.max_body_bytes);
  http_.set_keep_alive_timeout(3);
  http_.set_read_timeout(60);
  http_.set_write_timeout(60);
  int listen_fd = -1;
  http_.set_socket_options([&listen_fd](int fd) {
    listen_fd = fd;
    int yes = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  routes();

  int port = options_.port;
  const bool bound = port == 0 ? (port = http_.bind_to_any_port(options_.host)) > 0 : http_.bind_to_port(options_.host, port);
  if (!bound)
    throw IoError(fmt::format("cannot listen on {}:{} (--host/--port): the address is in use or not allowed here; "
                              "choose another --port or stop the program using it",
                              options_.host, options_.port));
  // Debian's httplib listens with a backlog of 5: a burst of clients would wait for SYN
  // retransmits. listen() again raises it.
  if (listen_fd >= 0) ::listen(listen_fd, SOMAXCONN);
  std::thread http_thread([this] { http_.listen_after_bind(); });
  std::fprintf(stderr, "lathe serve: listening on http://%s:%d (loading %s)\n", options_.host.c_str(), port,
               options_.model.string().c_str());

  auto stop_http = [&] {
    http_.stop();
    http_thread.join();
  };
  try {
    LoadOptions load;
    load.chat_template_file = options_.chat_template;
    load.loras = options_.loras;
    std::shared_ptr<const Model> model = Model::load(options_.model, load);
    for (const auto& lora : model->summary().loras)
      std::fprintf(stderr, "lathe serve: lora %s (scale %g): %zu matrices changed\n", lora.path.c_str(), lora.scale,
                   lora.matrices);
    ServiceOptions service = options_.service;
    if (options_.hooks) service.hooks = options_.hooks(*model);
    service_owner_ = std::make_unique<InferenceService>(model, service);
  } catch (...) {
    stop_http();
    throw;
  }
  service_ = service_owner_.get();
  std::fprintf(stderr, "lathe serve: ready: %s, %u slots of %u tokens, device %s%s\n", alias_.c_str(),
               service_owner_->n_slots(), service_owner_->n_ctx(), options_.service.compute.device.name().c_str(),
               options_.api_key.empty() ? "" : ", API key required");

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  std::fprintf(stderr, "lathe serve: %s: stopping (%zu requests in flight, %lld ms to finish)\n",
               signal_number == SIGINT ? "SIGINT" : "SIGTERM", service_owner_->in_flight(),
               static_cast<long long>(options_.shutdown_grace.count()));
  service_owner_->shutdown(options_.shutdown_grace);
  stop_http();
  std::fprintf(stderr, "lathe serve: stopped\n");
  return 0;
}

}  // namespace

int serve(const ServerOptions& options) { return HttpServer(options).run(); }

}  // namespace lathe::server
