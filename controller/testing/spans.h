// Spans as an agent would send them, for the controller's tests.
#ifndef REPTRACE_CONTROLLER_TESTING_SPANS_H_
#define REPTRACE_CONTROLLER_TESTING_SPANS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "proto/reptrace.pb.h"

namespace reptrace::controller::testing {

// An IPv4 endpoint a.b.c.d:port.
v1::Endpoint Ipv4(int a, int b, int c, int d, uint32_t port);

// One TCP connection: `client` connected to `server`.
struct Flow {
  v1::Endpoint client;
  v1::Endpoint server;
};

// What differs between spans; everything else gets plausible values.
struct SpanSpec {
  uint64_t span_id = 0;
  uint64_t local_parent_span_id = 0;  // as the agent sends it
  std::string service;
  uint32_t pid = 100;
  Flow flow;
  uint64_t request_offset = 0;
  uint64_t request_bytes = 78;
  int64_t start_ns = 0;
  int64_t duration_ns = 1'000'000;
  std::string name = "GET /";
};

// The span of the process that connected (local = flow.client, peer = flow.server).
v1::Span ClientSpan(const SpanSpec& spec);
// The span of the process that accepted (local = flow.server, peer = flow.client).
v1::Span ServerSpan(const SpanSpec& spec);

v1::SpanBatch Batch(uint64_t batch_id, const std::vector<v1::Span>& spans);

}  // namespace reptrace::controller::testing

#endif  // REPTRACE_CONTROLLER_TESTING_SPANS_H_
