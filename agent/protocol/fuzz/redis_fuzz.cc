// libFuzzer target: the Redis RESP request and response parsers.
#include <cstddef>
#include <cstdint>

#include "agent/protocol/fuzz/check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view head(reinterpret_cast<const char*>(data), size);
  reptrace::protocol::fuzz::CheckRequest(reptrace::protocol::ParseRedisRequest(head),
                                         reptrace::protocol::Protocol::kRedis);
  reptrace::protocol::fuzz::CheckResponse(reptrace::protocol::ParseRedisResponse(head));
  return 0;
}
