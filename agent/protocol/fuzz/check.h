// What every fuzz target asserts of a parser's result, beyond "no crash, no overread":
// the promises protocol.h makes. A broken promise aborts, which the fuzzer reports.
#ifndef REPTRACE_AGENT_PROTOCOL_FUZZ_CHECK_H_
#define REPTRACE_AGENT_PROTOCOL_FUZZ_CHECK_H_

#include <cstdio>
#include <cstdlib>
#include <optional>

#include "agent/protocol/internal/text.h"
#include "agent/protocol/protocol.h"

namespace reptrace {
namespace protocol {
namespace fuzz {

inline void Require(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "broken promise: %s\n", what);
    std::abort();
  }
}

inline void CheckAttributes(const Attributes& attributes) {
  for (const Attribute& attribute : attributes) {
    Require(!attribute.key.empty(), "attribute key is not empty");
    Require(internal::IsCleanText(attribute.key), "attribute key is clean text");
    Require(internal::IsCleanText(attribute.value), "attribute value is clean text");
  }
}

inline void CheckRequest(const std::optional<Request>& request, Protocol protocol) {
  if (!request) return;
  Require(request->protocol == protocol, "request of the parser's protocol");
  Require(!request->name.empty(), "span name is not empty");
  Require(internal::IsCleanText(request->name), "span name is clean text");
  CheckAttributes(request->attributes);
}

inline void CheckResponse(const std::optional<Response>& response) {
  if (!response) return;
  Require(internal::IsCleanText(response->status_message), "status message is clean text");
  Require(!response->error || !response->status_message.empty(), "an error says why");
  CheckAttributes(response->attributes);
}

}  // namespace fuzz
}  // namespace protocol
}  // namespace reptrace

#endif  // REPTRACE_AGENT_PROTOCOL_FUZZ_CHECK_H_
