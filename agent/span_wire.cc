#include "agent/span_wire.h"

#include <cstring>

#include "absl/base/attributes.h"
#include "google/protobuf/io/coded_stream.h"

namespace reptrace {
namespace {

using google::protobuf::io::CodedOutputStream;

// The helpers below are forced inline: called with constant field numbers, each folds to
// a test, a constant tag and the value; left to the compiler, the varint writer was an
// out-of-line call per field, a third of the writing.
#define REPTRACE_WIRE_INLINE ABSL_ATTRIBUTE_ALWAYS_INLINE inline

enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2 };

constexpr uint32_t Tag(uint32_t field, WireType type) { return (field << 3) | type; }

REPTRACE_WIRE_INLINE size_t TagSize(uint32_t tag) {
  return CodedOutputStream::VarintSize32(tag);
}

REPTRACE_WIRE_INLINE uint8_t* WriteTag(uint32_t tag, uint8_t* out) {
  return CodedOutputStream::WriteVarint32ToArray(tag, out);
}

// Proto3 leaves out every field at its default (0, empty): the helpers below write nothing
// then, and count nothing.

REPTRACE_WIRE_INLINE uint8_t* WriteFixed64(uint32_t field, uint64_t value, uint8_t* out) {
  if (value == 0) return out;
  out = WriteTag(Tag(field, kFixed64), out);
  return CodedOutputStream::WriteLittleEndian64ToArray(value, out);
}

// Every integer type as protobuf writes it: int64 and enums sign-extended to 64 bits.
REPTRACE_WIRE_INLINE size_t VarintSize(uint32_t field, uint64_t value) {
  return value == 0 ? 0
                    : TagSize(Tag(field, kVarint)) + CodedOutputStream::VarintSize64(value);
}

REPTRACE_WIRE_INLINE uint8_t* WriteVarint(uint32_t field, uint64_t value, uint8_t* out) {
  if (value == 0) return out;
  out = WriteTag(Tag(field, kVarint), out);
  return CodedOutputStream::WriteVarint64ToArray(value, out);
}

REPTRACE_WIRE_INLINE uint64_t Signed(int64_t value) { return static_cast<uint64_t>(value); }

REPTRACE_WIRE_INLINE size_t BytesBodySize(absl::string_view value) {
  return CodedOutputStream::VarintSize64(value.size()) + value.size();
}

REPTRACE_WIRE_INLINE uint8_t* WriteBytesBody(absl::string_view value, uint8_t* out) {
  out = CodedOutputStream::WriteVarint64ToArray(value.size(), out);
  std::memcpy(out, value.data(), value.size());
  return out + value.size();
}

// Bytes already encoded.
REPTRACE_WIRE_INLINE uint8_t* WriteRaw(absl::string_view bytes, uint8_t* out) {
  std::memcpy(out, bytes.data(), bytes.size());
  return out + bytes.size();
}

REPTRACE_WIRE_INLINE size_t StringSize(uint32_t field, absl::string_view value) {
  return value.empty() ? 0 : TagSize(Tag(field, kLengthDelimited)) + BytesBodySize(value);
}

REPTRACE_WIRE_INLINE uint8_t* WriteString(uint32_t field, absl::string_view value,
                                         uint8_t* out) {
  if (value.empty()) return out;
  out = WriteTag(Tag(field, kLengthDelimited), out);
  return WriteBytesBody(value, out);
}

REPTRACE_WIRE_INLINE size_t EndpointBodySize(const SpanEndpoint& end) {
  return StringSize(1, end.ip_bytes()) + VarintSize(2, end.port);
}

// A set message field is written even when it is empty.
REPTRACE_WIRE_INLINE uint8_t* WriteEndpoint(uint32_t field, const SpanEndpoint& end,
                                           uint8_t* out) {
  if (!end.set) return out;
  out = WriteTag(Tag(field, kLengthDelimited), out);
  out = CodedOutputStream::WriteVarint64ToArray(EndpointBodySize(end), out);
  out = WriteString(1, end.ip_bytes(), out);
  return WriteVarint(2, end.port, out);
}

// A map entry is a message whose key (1) and value (2) are always written.
REPTRACE_WIRE_INLINE size_t EntryBodySize(absl::string_view key, absl::string_view value) {
  return 2 + BytesBodySize(key) + BytesBodySize(value);
}

constexpr uint32_t kAttributesField = 23;

// The most a field takes besides its string's bytes: a tag (field numbers up to 2047 take
// two bytes) and a 64-bit varint (a value or a length).
constexpr size_t kMaxFieldBytes = 2 + 10;
// Every field that is not a string, and the tag and length of every string field, taken at
// their most: the 24 fields of a span (the attributes' tags apart), and the two fields of
// each endpoint with its 16 address bytes.
constexpr size_t kMaxFixedBytes = 24 * kMaxFieldBytes + 2 * (2 * kMaxFieldBytes + 16);
// An attribute's entry besides its key's and value's bytes: its own tag and length, then
// the key's and the value's.
constexpr size_t kMaxEntryBytes = 3 * kMaxFieldBytes;

#undef REPTRACE_WIRE_INLINE

}  // namespace

ConnectionWire EncodeConnectionWire(const SpanRecord& span) {
  // Once per connection: written into room for the most the fields can take.
  ConnectionWire wire;
  wire.kind_to_pid.resize(4 * kMaxFieldBytes + span.service.size() + span.node.size());
  auto* begin = reinterpret_cast<uint8_t*>(&wire.kind_to_pid[0]);
  uint8_t* out = WriteVarint(3, Signed(span.kind), begin);
  out = WriteString(4, span.service, out);
  out = WriteString(5, span.node, out);
  out = WriteVarint(6, span.pid, out);
  wire.kind_to_pid.resize(static_cast<size_t>(out - begin));
  wire.endpoints.resize(2 * (3 * kMaxFieldBytes + SpanEndpoint::kMaxIpBytes));
  begin = reinterpret_cast<uint8_t*>(&wire.endpoints[0]);
  out = WriteEndpoint(14, span.local, begin);
  out = WriteEndpoint(15, span.peer, out);
  wire.endpoints.resize(static_cast<size_t>(out - begin));
  return wire;
}

size_t SpanWireSizeBound(const SpanRecord& span) {
  size_t size = kMaxFixedBytes + span.service.size() + span.node.size() + span.process.size() +
                span.name.size() + span.status_message.size();
  for (const SpanAttribute& a : span.attributes) {
    size += kMaxEntryBytes + a.key.size() + a.value.size();
  }
  return size;
}

uint8_t* WriteSpanWire(const SpanRecord& span, uint8_t* out) {
  out = WriteFixed64(1, span.span_id, out);
  out = WriteFixed64(2, span.parent_span_id, out);
  if (span.connection_wire != nullptr) {
    out = WriteRaw(span.connection_wire->kind_to_pid, out);
  } else {
    out = WriteVarint(3, Signed(span.kind), out);
    out = WriteString(4, span.service, out);
    out = WriteString(5, span.node, out);
    out = WriteVarint(6, span.pid, out);
  }
  out = WriteVarint(7, span.tid, out);
  out = WriteString(8, span.process, out);
  out = WriteString(9, span.name, out);
  out = WriteVarint(10, Signed(span.start_ns), out);
  out = WriteVarint(11, Signed(span.end_ns), out);
  out = WriteVarint(12, Signed(span.status), out);
  out = WriteString(13, span.status_message, out);
  if (span.connection_wire != nullptr) {
    out = WriteRaw(span.connection_wire->endpoints, out);
  } else {
    out = WriteEndpoint(14, span.local, out);
    out = WriteEndpoint(15, span.peer, out);
  }
  out = WriteVarint(16, span.request_offset, out);
  out = WriteVarint(17, span.request_bytes, out);
  out = WriteVarint(18, span.response_offset, out);
  out = WriteVarint(19, span.response_bytes, out);
  out = WriteFixed64(20, span.request_hash, out);
  out = WriteFixed64(21, span.response_hash, out);
  out = WriteVarint(22, span.connection_id, out);
  for (const SpanAttribute& a : span.attributes) {
    out = WriteTag(Tag(kAttributesField, kLengthDelimited), out);
    out = CodedOutputStream::WriteVarint64ToArray(EntryBodySize(a.key, a.value), out);
    *out++ = Tag(1, kLengthDelimited);
    out = WriteBytesBody(a.key, out);
    *out++ = Tag(2, kLengthDelimited);
    out = WriteBytesBody(a.value, out);
  }
  return WriteFixed64(24, span.trace_id, out);
}

}  // namespace reptrace
