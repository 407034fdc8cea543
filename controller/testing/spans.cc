#include "controller/testing/spans.h"

namespace reptrace::controller::testing {
namespace {

v1::Span CommonSpan(const SpanSpec& spec) {
  v1::Span span;
  span.set_span_id(spec.span_id);
  span.set_parent_span_id(spec.local_parent_span_id);
  span.set_service(spec.service);
  span.set_node(spec.service + "-node");
  span.set_pid(spec.pid);
  span.set_tid(spec.pid);
  span.set_process(spec.service);
  span.set_name(spec.name);
  span.set_start_ns(spec.start_ns);
  span.set_end_ns(spec.start_ns + spec.duration_ns);
  span.set_status(v1::SPAN_STATUS_OK);
  span.set_request_offset(spec.request_offset);
  span.set_request_bytes(spec.request_bytes);
  span.set_response_offset(spec.request_offset * 2);
  span.set_response_bytes(512);
  span.set_request_hash(spec.request_offset * 7919 + 17);
  span.set_response_hash(spec.request_offset * 104729 + 3);
  span.set_connection_id(7);
  (*span.mutable_attributes())["http.method"] = "GET";
  return span;
}

}  // namespace

v1::Endpoint Ipv4(int a, int b, int c, int d, uint32_t port) {
  v1::Endpoint endpoint;
  const char ip[4] = {static_cast<char>(a), static_cast<char>(b), static_cast<char>(c),
                      static_cast<char>(d)};
  endpoint.set_ip(ip, sizeof(ip));
  endpoint.set_port(port);
  return endpoint;
}

v1::Span ClientSpan(const SpanSpec& spec) {
  v1::Span span = CommonSpan(spec);
  span.set_kind(v1::SPAN_KIND_CLIENT);
  *span.mutable_local() = spec.flow.client;
  *span.mutable_peer() = spec.flow.server;
  return span;
}

v1::Span ServerSpan(const SpanSpec& spec) {
  v1::Span span = CommonSpan(spec);
  span.set_kind(v1::SPAN_KIND_SERVER);
  *span.mutable_local() = spec.flow.server;
  *span.mutable_peer() = spec.flow.client;
  return span;
}

v1::SpanBatch Batch(uint64_t batch_id, const std::vector<v1::Span>& spans) {
  v1::SpanBatch batch;
  batch.set_batch_id(batch_id);
  for (const v1::Span& span : spans) *batch.add_spans() = span;
  return batch;
}

}  // namespace reptrace::controller::testing
