#include "controller/span_validation.h"

#include "controller/testing/spans.h"
#include "gtest/gtest.h"

namespace reptrace::controller {
namespace {

using testing::ClientSpan;
using testing::Ipv4;
using testing::SpanSpec;

v1::Span GoodSpan(uint64_t id) {
  SpanSpec spec;
  spec.span_id = id;
  spec.service = "curl";
  spec.flow = {Ipv4(10, 0, 0, 1, 40000), Ipv4(10, 0, 0, 2, 80)};
  spec.start_ns = 1'700'000'000'000'000'000;
  return ClientSpan(spec);
}

TEST(ValidateSpanTest, AcceptsAnAgentsSpan) { EXPECT_TRUE(ValidateSpan(GoodSpan(1)).ok()); }

TEST(ValidateSpanTest, RefusesZeroId) {
  EXPECT_EQ(ValidateSpan(GoodSpan(0)).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ValidateSpanTest, RefusesUnspecifiedKind) {
  v1::Span span = GoodSpan(1);
  span.set_kind(v1::SPAN_KIND_UNSPECIFIED);
  EXPECT_FALSE(ValidateSpan(span).ok());
}

TEST(ValidateSpanTest, RefusesEndBeforeStart) {
  v1::Span span = GoodSpan(1);
  span.set_end_ns(span.start_ns() - 1);
  EXPECT_FALSE(ValidateSpan(span).ok());
}

TEST(ValidateSpanTest, RefusesValuesTheDatabaseCannotHold) {
  v1::Span own_parent = GoodSpan(5);
  own_parent.set_parent_span_id(5);
  v1::Span big_port = GoodSpan(1);
  big_port.mutable_peer()->set_port(70000);
  v1::Span odd_address = GoodSpan(1);
  odd_address.mutable_local()->set_ip("abc");
  v1::Span odd_status = GoodSpan(1);
  odd_status.set_status(static_cast<v1::SpanStatus>(40000));
  v1::Span far_future = GoodSpan(1);
  far_future.set_end_ns(kMaxTimestampNs + 1);
  for (const v1::Span& span : {own_parent, big_port, odd_address, odd_status, far_future}) {
    EXPECT_FALSE(ValidateSpan(span).ok()) << span.DebugString();
  }
}

TEST(ValidateBatchTest, KeepsGoodSpansAndCountsBadOnes) {
  v1::Span no_kind = GoodSpan(3);
  no_kind.set_kind(v1::SPAN_KIND_UNSPECIFIED);
  v1::SpanBatch batch = testing::Batch(9, {GoodSpan(1), GoodSpan(0), GoodSpan(2), no_kind});
  batch.mutable_counters()->set_spans_built(4);

  ValidationResult result = ValidateBatch(batch);

  EXPECT_EQ(result.dropped, 2);
  ASSERT_EQ(result.valid.spans_size(), 2);
  EXPECT_EQ(result.valid.spans(0).span_id(), 1u);
  EXPECT_EQ(result.valid.spans(1).span_id(), 2u);
  EXPECT_EQ(result.valid.batch_id(), 9u);
  EXPECT_EQ(result.valid.counters().spans_built(), 4u);
  EXPECT_NE(result.first_problem.find("span_id is 0"), std::string::npos)
      << result.first_problem;
}

TEST(ValidateBatchTest, AllSpansValidIsTrueOnlyWhenNoneWouldBeDropped) {
  v1::Span no_kind = GoodSpan(3);
  no_kind.set_kind(v1::SPAN_KIND_UNSPECIFIED);

  EXPECT_TRUE(AllSpansValid(testing::Batch(1, {GoodSpan(1), GoodSpan(2)})));
  EXPECT_TRUE(AllSpansValid(testing::Batch(2, {})));
  EXPECT_FALSE(AllSpansValid(testing::Batch(3, {GoodSpan(1), no_kind})));
  EXPECT_FALSE(AllSpansValid(testing::Batch(4, {GoodSpan(0)})));
}

}  // namespace
}  // namespace reptrace::controller
