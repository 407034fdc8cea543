// Which spans from an agent the controller accepts. A malformed span is dropped and
// counted; it never fails its batch (the agent would resend the batch forever).
#ifndef REPTRACE_CONTROLLER_SPAN_VALIDATION_H_
#define REPTRACE_CONTROLLER_SPAN_VALIDATION_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "proto/reptrace.pb.h"

namespace reptrace::controller {

// Timestamps beyond this (year 2096) are refused, which keeps the linker's time
// arithmetic far from BIGINT overflow.
inline constexpr int64_t kMaxTimestampNs = 4'000'000'000'000'000'000;

// OK, or INVALID_ARGUMENT saying what is wrong: span_id 0, parent_span_id equal to
// span_id, kind neither CLIENT nor SERVER, status out of range, start_ns not positive,
// end_ns before start_ns or beyond kMaxTimestampNs, a port above 65535, an address that
// is neither empty, 4 nor 16 bytes.
absl::Status ValidateSpan(const v1::Span& span);

struct ValidationResult {
  v1::SpanBatch valid;        // batch_id, counters and the valid spans of the input
  int dropped = 0;            // spans refused
  std::string first_problem;  // why the first refused span was refused, with its id
};

ValidationResult ValidateBatch(const v1::SpanBatch& batch);
// Whether ValidateBatch would keep every span (without copying any).
bool AllSpansValid(const v1::SpanBatch& batch);

}  // namespace reptrace::controller

#endif  // REPTRACE_CONTROLLER_SPAN_VALIDATION_H_
