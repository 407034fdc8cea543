#include "controller/span_validation.h"

#include "absl/strings/str_cat.h"
#include "common/ids.h"

namespace reptrace::controller {
namespace {

constexpr uint32_t kMaxPort = 65535;

bool ValidAddress(const v1::Endpoint& endpoint) {
  const size_t size = endpoint.ip().size();
  return (size == 0 || size == 4 || size == 16) && endpoint.port() <= kMaxPort;
}

}  // namespace

absl::Status ValidateSpan(const v1::Span& span) {
  if (span.span_id() == 0) return absl::InvalidArgumentError("span_id is 0");
  if (span.parent_span_id() == span.span_id()) {
    return absl::InvalidArgumentError("parent_span_id equals span_id");
  }
  if (span.kind() != v1::SPAN_KIND_CLIENT && span.kind() != v1::SPAN_KIND_SERVER) {
    return absl::InvalidArgumentError(absl::StrCat("kind is ", span.kind()));
  }
  if (!v1::SpanStatus_IsValid(span.status())) {
    return absl::InvalidArgumentError(absl::StrCat("status is ", span.status()));
  }
  if (span.start_ns() <= 0) return absl::InvalidArgumentError("start_ns is not positive");
  if (span.end_ns() < span.start_ns()) {
    return absl::InvalidArgumentError("end_ns is before start_ns");
  }
  if (span.end_ns() > kMaxTimestampNs) return absl::InvalidArgumentError("end_ns too large");
  if (!ValidAddress(span.local()) || !ValidAddress(span.peer())) {
    return absl::InvalidArgumentError("bad local or peer address");
  }
  return absl::OkStatus();
}

bool AllSpansValid(const v1::SpanBatch& batch) {
  for (const v1::Span& span : batch.spans()) {
    if (!ValidateSpan(span).ok()) return false;
  }
  return true;
}

ValidationResult ValidateBatch(const v1::SpanBatch& batch) {
  ValidationResult result;
  result.valid.set_batch_id(batch.batch_id());
  if (batch.has_counters()) *result.valid.mutable_counters() = batch.counters();
  for (const v1::Span& span : batch.spans()) {
    absl::Status status = ValidateSpan(span);
    if (status.ok()) {
      *result.valid.add_spans() = span;
      continue;
    }
    if (result.dropped == 0) {
      result.first_problem =
          absl::StrCat("span ", FormatId(span.span_id()), ": ", status.message());
    }
    ++result.dropped;
  }
  return result;
}

}  // namespace reptrace::controller
