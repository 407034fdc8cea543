#include "agent/span_record.h"

#include <algorithm>
#include <cstring>
#include <string>

namespace reptrace {
namespace {

void SetEndpoint(const SpanEndpoint& from, v1::Endpoint* to) {
  to->set_ip(std::string(from.ip_bytes()));
  to->set_port(from.port);
}

SpanEndpoint EndpointViewOf(bool set, const v1::Endpoint& end) {
  SpanEndpoint out;
  if (!set) return out;
  out.SetIp(end.ip());
  out.port = end.port();
  return out;
}

// Orders keys as string_view's operator< does (bytes as unsigned char). Keys mostly differ
// in their first byte: compared there first, they rarely need memcmp (a call each time).
bool KeyLess(absl::string_view a, absl::string_view b) {
  if (!a.empty() && !b.empty() && a[0] != b[0]) {
    return static_cast<unsigned char>(a[0]) < static_cast<unsigned char>(b[0]);
  }
  return a < b;
}

}  // namespace

void SpanEndpoint::SetIp(absl::string_view bytes) {
  set = true;
  ip_size = static_cast<uint8_t>(std::min(bytes.size(), kMaxIpBytes));
  std::memcpy(ip, bytes.data(), ip_size);
}

void SpanRecord::SetAttribute(absl::string_view key, absl::string_view value) {
  // A span has a handful of attributes, mostly set in key order: looked for from the end,
  // a key is usually appended (InlinedVector's insert was most of the cost).
  size_t at = attributes.size();
  while (at > 0 && KeyLess(key, attributes[at - 1].key)) --at;
  if (at > 0 && attributes[at - 1].key == key) {
    attributes[at - 1].value = value;
  } else if (at == attributes.size()) {
    attributes.push_back(SpanAttribute{key, value});
  } else {
    // Moved up by hand: InlinedVector's insert cost some 200 instructions to move a few
    // pairs of views.
    attributes.push_back(attributes.back());
    for (size_t i = attributes.size() - 2; i > at; --i) attributes[i] = attributes[i - 1];
    attributes[at] = SpanAttribute{key, value};
  }
}

v1::Span ToSpanProto(const SpanRecord& record) {
  v1::Span span;
  span.set_span_id(record.span_id);
  span.set_parent_span_id(record.parent_span_id);
  span.set_kind(record.kind);
  span.set_service(std::string(record.service));
  span.set_node(std::string(record.node));
  span.set_pid(record.pid);
  span.set_tid(record.tid);
  span.set_process(std::string(record.process));
  span.set_name(std::string(record.name));
  span.set_start_ns(record.start_ns);
  span.set_end_ns(record.end_ns);
  span.set_status(record.status);
  span.set_status_message(std::string(record.status_message));
  if (record.local.set) SetEndpoint(record.local, span.mutable_local());
  if (record.peer.set) SetEndpoint(record.peer, span.mutable_peer());
  span.set_request_offset(record.request_offset);
  span.set_request_bytes(record.request_bytes);
  span.set_response_offset(record.response_offset);
  span.set_response_bytes(record.response_bytes);
  span.set_request_hash(record.request_hash);
  span.set_response_hash(record.response_hash);
  span.set_connection_id(record.connection_id);
  auto& attributes = *span.mutable_attributes();
  for (const SpanAttribute& a : record.attributes) {
    attributes[std::string(a.key)] = std::string(a.value);
  }
  span.set_trace_id(record.trace_id);
  return span;
}

SpanRecord SpanRecordViewOf(const v1::Span& span) {
  SpanRecord record;
  record.span_id = span.span_id();
  record.parent_span_id = span.parent_span_id();
  record.kind = span.kind();
  record.service = span.service();
  record.node = span.node();
  record.pid = span.pid();
  record.tid = span.tid();
  record.process = span.process();
  record.name = span.name();
  record.start_ns = span.start_ns();
  record.end_ns = span.end_ns();
  record.status = span.status();
  record.status_message = span.status_message();
  record.local = EndpointViewOf(span.has_local(), span.local());
  record.peer = EndpointViewOf(span.has_peer(), span.peer());
  record.request_offset = span.request_offset();
  record.request_bytes = span.request_bytes();
  record.response_offset = span.response_offset();
  record.response_bytes = span.response_bytes();
  record.request_hash = span.request_hash();
  record.response_hash = span.response_hash();
  record.connection_id = span.connection_id();
  for (const auto& [key, value] : span.attributes()) record.SetAttribute(key, value);
  record.trace_id = span.trace_id();
  return record;
}

}  // namespace reptrace
