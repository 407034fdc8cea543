// libFuzzer target: the DNS query and response parsers, over UDP and over TCP.
#include <cstddef>
#include <cstdint>

#include "agent/protocol/fuzz/check.h"

using reptrace::protocol::Transport;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view head(reinterpret_cast<const char*>(data), size);
  for (Transport transport : {Transport::kUdp, Transport::kTcp}) {
    std::optional<reptrace::protocol::Request> request =
        reptrace::protocol::ParseDnsRequest(head, transport);
    reptrace::protocol::fuzz::CheckRequest(request, reptrace::protocol::Protocol::kDns);
    reptrace::protocol::fuzz::Require(!request || request->exchange_id.has_value(),
                                      "a DNS query has an id");
    std::optional<reptrace::protocol::Response> response =
        reptrace::protocol::ParseDnsResponse(head, transport);
    reptrace::protocol::fuzz::CheckResponse(response);
    reptrace::protocol::fuzz::Require(!response || response->exchange_id.has_value(),
                                      "a DNS response has an id");
  }
  return 0;
}
