// A finished span as the span builder hands it to its sink: the fields of a v1::Span, with
// its strings as views and its endpoints and attributes stored inline, so that building
// one allocates nothing (a v1::Span message was a dozen allocations and frees per span,
// and most of the agent's CPU per span). span_wire.h writes its wire bytes directly.
//
// A record owns none of its strings: whoever fills it keeps them alive for as long as the
// record is used (the span builder's: during the sink call only).
#ifndef REPTRACE_AGENT_SPAN_RECORD_H_
#define REPTRACE_AGENT_SPAN_RECORD_H_

#include <cstddef>
#include <cstdint>

#include "absl/container/inlined_vector.h"
#include "absl/strings/string_view.h"
#include "proto/reptrace.pb.h"

namespace reptrace {

// A v1::Endpoint: an address of 4 or 16 bytes (or none) and a port.
struct SpanEndpoint {
  static constexpr size_t kMaxIpBytes = 16;

  // A set endpoint is written even when it is empty (a Unix-domain connection's), as
  // protobuf writes a set message field.
  bool set = false;
  uint8_t ip_size = 0;
  char ip[kMaxIpBytes] = {};
  uint32_t port = 0;

  absl::string_view ip_bytes() const { return absl::string_view(ip, ip_size); }
  // Sets the address (its first kMaxIpBytes bytes) and marks the endpoint set.
  void SetIp(absl::string_view bytes);
};

struct SpanAttribute {
  absl::string_view key;
  absl::string_view value;
};

struct ConnectionWire;  // span_wire.h

struct SpanRecord {
  // Attributes a span has at most without allocating: the known protocols' (see
  // agent/protocol) and its workload's five (agent/workload.h).
  static constexpr size_t kInlineAttributes = 16;

  uint64_t span_id = 0;
  uint64_t parent_span_id = 0;
  v1::SpanKind kind = v1::SPAN_KIND_UNSPECIFIED;
  absl::string_view service;
  absl::string_view node;
  uint32_t pid = 0;
  uint32_t tid = 0;
  absl::string_view process;
  absl::string_view name;
  int64_t start_ns = 0;
  int64_t end_ns = 0;
  v1::SpanStatus status = v1::SPAN_STATUS_UNSET;
  absl::string_view status_message;
  SpanEndpoint local;
  SpanEndpoint peer;
  uint64_t request_offset = 0;
  uint64_t request_bytes = 0;
  uint64_t response_offset = 0;
  uint64_t response_bytes = 0;
  uint64_t request_hash = 0;
  uint64_t response_hash = 0;
  uint64_t connection_id = 0;
  // Unique keys in key order, as a map is: change them through SetAttribute only. The wire
  // bytes list them in this order, which is the order protobuf's deterministic
  // serialization gives a map (its default order is its hash table's, which differs from
  // one message to the next).
  absl::InlinedVector<SpanAttribute, kInlineAttributes> attributes;
  uint64_t trace_id = 0;
  // Optional: the wire bytes of its fields that every span of its connection has alike
  // (EncodeConnectionWire of this record, span_wire.h), which WriteSpanWire then copies
  // as they are. Whoever sets it keeps them exactly those of the record's fields.
  const ConnectionWire* connection_wire = nullptr;

  // Sets the value of `key`, replacing one it had (as a map's operator[] does).
  void SetAttribute(absl::string_view key, absl::string_view value);
};

// The record as a message (its strings copied).
v1::Span ToSpanProto(const SpanRecord& record);

// A record viewing `span`'s strings (valid while `span` is unchanged); its endpoints'
// addresses are cut to SpanEndpoint::kMaxIpBytes. For tests that write their spans as
// messages.
SpanRecord SpanRecordViewOf(const v1::Span& span);

}  // namespace reptrace

#endif  // REPTRACE_AGENT_SPAN_RECORD_H_
