#include "common/endpoint.h"

#include <arpa/inet.h>

#include <cstring>

#include "absl/strings/str_cat.h"

namespace reptrace {

std::string FormatEndpoint(const v1::Endpoint& endpoint) {
  char text[INET6_ADDRSTRLEN] = {};
  const std::string& ip = endpoint.ip();
  if (ip.size() == 4 && inet_ntop(AF_INET, ip.data(), text, sizeof(text)) != nullptr) {
    return absl::StrCat(text, ":", endpoint.port());
  }
  if (ip.size() == 16 && inet_ntop(AF_INET6, ip.data(), text, sizeof(text)) != nullptr) {
    return absl::StrCat("[", text, "]:", endpoint.port());
  }
  return "?";
}

void EndpointFromRecord(const uint8_t (&addr)[16], uint16_t port, v1::Endpoint* out) {
  static constexpr uint8_t kMappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(addr, kMappedPrefix, sizeof(kMappedPrefix)) == 0) {
    out->set_ip(reinterpret_cast<const char*>(addr) + 12, 4);
  } else {
    out->set_ip(reinterpret_cast<const char*>(addr), 16);
  }
  out->set_port(port);
}

}  // namespace reptrace
