// A span's wire bytes, written by the agent itself from its SpanRecord: exactly what
// protobuf's deterministic serialization writes for ToSpanProto(record) (fields in number
// order, the attributes in key order), without building the message. Protobuf's
// serializer also checks every string for UTF-8 (and only logs when one is not: it writes
// it all the same), which was a third of its cost; the span builder makes every string
// valid UTF-8 itself.
#ifndef REPTRACE_AGENT_SPAN_WIRE_H_
#define REPTRACE_AGENT_SPAN_WIRE_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "agent/span_record.h"

namespace reptrace {

// The wire bytes of the fields every span of one connection has alike, encoded once per
// connection: a span carrying them (SpanRecord::connection_wire) is written with a copy of
// each run instead of field by field. Each run is a run of consecutive field numbers, so
// the bytes stay in protobuf's order.
struct ConnectionWire {
  std::string kind_to_pid;  // kind, service, node, pid (fields 3 to 6)
  std::string endpoints;    // local, peer (14, 15)
};

// The bytes of those fields of `span`.
ConnectionWire EncodeConnectionWire(const SpanRecord& span);

// At least the number of bytes WriteSpanWire writes for `span`, found without encoding
// anything (its strings' sizes and the most every other field can take): the room it
// needs. The exact size is where the bytes end.
size_t SpanWireSizeBound(const SpanRecord& span);

// Writes the span's wire bytes at `out` (at most SpanWireSizeBound(span) of them); returns
// their end.
uint8_t* WriteSpanWire(const SpanRecord& span, uint8_t* out);

}  // namespace reptrace

#endif  // REPTRACE_AGENT_SPAN_WIRE_H_
