// libFuzzer target: protocol detection (ParseRequest) and ParseResponse for every protocol.
// The first byte picks the transport and the server-port hint; the rest is the head.
#include <cstddef>
#include <cstdint>

#include "agent/protocol/fuzz/check.h"

namespace protocol = reptrace::protocol;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  constexpr uint16_t kPorts[] = {0, 80, 6379, 5432, 53, 8080, 9999, 443};
  const protocol::Transport transport =
      (data[0] & 0x80) != 0 ? protocol::Transport::kUdp : protocol::Transport::kTcp;
  const uint16_t port = kPorts[data[0] & 0x7];
  const absl::string_view head(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::optional<protocol::Request> request = protocol::ParseRequest(head, transport, port);
  if (request) {
    protocol::fuzz::CheckRequest(request, request->protocol);
    // Detection only picks a parser: what it found, that parser finds alone.
    std::optional<protocol::Request> direct;
    switch (request->protocol) {
      case protocol::Protocol::kHttp: direct = protocol::ParseHttpRequest(head); break;
      case protocol::Protocol::kRedis: direct = protocol::ParseRedisRequest(head); break;
      case protocol::Protocol::kPostgresql: direct = protocol::ParsePostgresqlRequest(head); break;
      case protocol::Protocol::kDns: direct = protocol::ParseDnsRequest(head, transport); break;
    }
    protocol::fuzz::Require(direct && direct->name == request->name,
                            "detection agrees with the protocol's own parser");
  }
  for (protocol::Protocol p : {protocol::Protocol::kHttp, protocol::Protocol::kRedis,
                               protocol::Protocol::kPostgresql, protocol::Protocol::kDns}) {
    protocol::fuzz::CheckResponse(protocol::ParseResponse(p, head, transport));
  }
  return 0;
}
