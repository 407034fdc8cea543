// Address prefixes ("10.0.0.0/8", "fd00::/8") as the config's peer_cidrs hold them:
// parsed once here for the controller's validation and the agent's config page alike.
#ifndef REPTRACE_COMMON_CIDR_H_
#define REPTRACE_COMMON_CIDR_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace reptrace {

// A prefix over 16-byte addresses in the form events carry them (IPv4 as ::ffff:a.b.c.d):
// an IPv4 prefix of length n is one of length 96 + n here.
struct Cidr {
  uint8_t addr[16] = {};
  int prefix = 0;  // 0..128
};

// ADDRESS/LENGTH, IPv4 or IPv6, the length required and in range, no host bits set.
// INVALID_ARGUMENT says what is wrong (without naming a field: callers know which it is).
absl::StatusOr<Cidr> ParseCidr(absl::string_view text);

}  // namespace reptrace

#endif  // REPTRACE_COMMON_CIDR_H_
