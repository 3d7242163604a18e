// libFuzzer target for the server's request path: any body bytes sent to /v1/chat/completions or
// /v1/completions must parse into generation options or be refused with an ApiError (a 400 naming
// the field); never crash, hit undefined behaviour, hang or allocate without bound. The answer's
// JSON framing (SSE, invalid UTF-8 in text) is exercised on what the parser accepted.
#include <cstddef>
#include <cstdint>
#include <string>

#include "server/api_error.hpp"
#include "server/request.hpp"
#include "server/response.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (1u << 16)) return 0;
  const std::string text(reinterpret_cast<const char*>(data), size);
  for (bool chat : {true, false}) {
    try {
      const nlohmann::ordered_json body = lathe::server::parse_body(text);
      const lathe::server::CompletionRequest r =
          chat ? lathe::server::parse_chat_request(body) : lathe::server::parse_completion_request(body);
      lathe::server::StopStrings stops(r.stop);
      std::string sent = stops.push(text.substr(0, size / 2));
      sent += stops.push(text.substr(size / 2));
      sent += stops.flush();
      const lathe::server::ResponseHead head{"x", 0, r.model};
      (void)lathe::server::sse_event(lathe::server::chat_chunk(head, {{"content", sent}}, nullptr, std::nullopt));
    } catch (const lathe::server::ApiError& e) {
      if (e.status() != 400) __builtin_trap();  // parsing refuses only with 400
    }
  }
  return 0;
}
