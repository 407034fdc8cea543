// libFuzzer target: the HTTP/1.x request and response parsers.
#include <cstddef>
#include <cstdint>

#include "agent/http_head.h"
#include "agent/protocol/fuzz/check.h"

using reptrace::protocol::Protocol;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view head(reinterpret_cast<const char*>(data), size);
  reptrace::protocol::fuzz::CheckRequest(reptrace::protocol::ParseHttpRequest(head),
                                         Protocol::kHttp);
  reptrace::protocol::fuzz::CheckRequest(
      reptrace::protocol::ParseHttpRequest(head, {/*http_query=*/true}), Protocol::kHttp);
  reptrace::protocol::fuzz::CheckResponse(reptrace::protocol::ParseHttpResponse(head));
  reptrace::ParseHttpRequestLine(head);
  reptrace::ParseHttpStatusCode(head);
  return 0;
}
