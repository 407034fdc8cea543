// Formatting of the addresses carried in spans.
#ifndef REPTRACE_COMMON_ENDPOINT_H_
#define REPTRACE_COMMON_ENDPOINT_H_

#include <cstdint>
#include <string>

#include "proto/reptrace.pb.h"

namespace reptrace {

// "10.0.0.1:80", "[::1]:80"; "?" for an endpoint with no valid address.
std::string FormatEndpoint(const v1::Endpoint& endpoint);

// Fills `out` from a 16-byte address as stored in EventRecord (IPv4-mapped addresses
// become 4-byte IPv4).
void EndpointFromRecord(const uint8_t (&addr)[16], uint16_t port, v1::Endpoint* out);

}  // namespace reptrace

#endif  // REPTRACE_COMMON_ENDPOINT_H_
