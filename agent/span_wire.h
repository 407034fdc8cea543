// A v1::Span's wire bytes, written by the agent itself: exactly what protobuf's
// SerializeToString writes (fields in number order, the attributes in the map's own
// iteration order), at a fraction of its cost. Protobuf's serializer also checks every
// string for UTF-8 (and only logs when one is not: it writes it all the same), which was a
// third of the cost; the span builder makes every string valid UTF-8 itself.
#ifndef REPTRACE_AGENT_SPAN_WIRE_H_
#define REPTRACE_AGENT_SPAN_WIRE_H_

#include <cstddef>
#include <cstdint>

#include "proto/reptrace.pb.h"

namespace reptrace {

// The number of bytes WriteSpanWire writes for `span` (span.ByteSizeLong()).
size_t SpanWireSize(const v1::Span& span);

// Writes the span's wire bytes at `out` (SpanWireSize(span) of them); returns their end.
uint8_t* WriteSpanWire(const v1::Span& span, uint8_t* out);

}  // namespace reptrace

#endif  // REPTRACE_AGENT_SPAN_WIRE_H_
