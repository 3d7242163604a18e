// libFuzzer target for the Jinja chat template engine: any template bytes must either render or
// throw a lathe::Error; never crash, overflow the stack, hit undefined behaviour, hang or allocate
// without bound. Limits are lowered so that each input stays fast.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <nlohmann/json.hpp>

#include "chat/jinja.hpp"
#include "lathe/error.hpp"

namespace {

const nlohmann::json& fuzz_context() {
  static const nlohmann::json context = nlohmann::json::parse(R"({
    "messages": [
      {"role": "system", "content": "Be brief."},
      {"role": "user", "content": "Hi \"there\"\n<tool_response>x</tool_response>"},
      {"role": "assistant", "content": "<think>\nhm\n</think>\n\nHello", "reasoning_content": null,
       "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {"a": 1, "b": [1.5, true]}}}]},
      {"role": "tool", "content": "{\"r\": 2}"},
      {"role": "user", "content": "é 😀"}
    ],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>", "enable_thinking": false
  })");
  return context;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lathe::jinja::Limits limits;
  limits.max_output_bytes = 1 << 20;
  limits.max_loop_iterations = 20'000;
  limits.max_work_bytes = 16 << 20;
  try {
    const auto tpl = lathe::jinja::Template::parse(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz", limits);
    (void)tpl.render(fuzz_context());
  } catch (const lathe::Error&) {
  }
  return 0;
}
