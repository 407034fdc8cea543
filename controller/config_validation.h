// Checks a reptrace.v1.TraceConfig document as a whole before it is stored.
//
// ValidateConfig is pure: no I/O, no state. It returns OK, or INVALID_ARGUMENT whose
// message starts with the path of the first offending field, in the proto's field names,
// e.g. `filters[2].peer_cidrs[0]: "10.0.0.0/33" is not a CIDR (prefix length 33 > 32)`.
//
// Refused:
//  - unknown fields anywhere (a field number this controller does not know, e.g. from a
//    newer client): stored, they would be passed on without anyone having checked them;
//  - unknown enum values (action, direction), and ACTION_UNSPECIFIED;
//  - capture_bytes > 128;
//  - a port range with first 0 or > 65535, last > 65535, or 0 < last < first;
//  - port ranges that overlap within one list (a filter's local_ports, its peer_ports,
//    inband_ports);
//  - a peer CIDR that is not ADDRESS/LENGTH (IPv4 or IPv6, the length required and in
//    range) or that has host bits set ("10.0.0.1/8");
//  - an empty string in services, processes, nodes or peer_cidrs;
//  - sampling.probability outside [0, 1] or NaN; sampling.keep_slower_than_ms < 0;
//  - more entries than the hooked processes' config page holds (common/config_page.h):
//    32 filters, 32 inband_ports, 8 services, processes, local_ports, peer_ports or
//    peer_cidrs per filter.
#ifndef REPTRACE_CONTROLLER_CONFIG_VALIDATION_H_
#define REPTRACE_CONTROLLER_CONFIG_VALIDATION_H_

#include <cstdint>

#include "absl/status/status.h"
#include "proto/reptrace.pb.h"

namespace reptrace::controller {

inline constexpr uint32_t kMaxCaptureBytes = 128;

absl::Status ValidateConfig(const v1::TraceConfig& config);

// The document of version 1 (what schema migration 7 stores): enabled, every trace
// kept (sampling.probability 1), capture_bytes 128, nothing else set.
v1::TraceConfig DefaultConfig();

}  // namespace reptrace::controller

#endif  // REPTRACE_CONTROLLER_CONFIG_VALIDATION_H_
