#include "agent/span_buffer.h"

#include <malloc.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace reptrace {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1700000000);

SpanRecord SpanNumber(uint64_t n) {
  SpanRecord span;
  span.span_id = n;
  return span;
}

std::vector<uint64_t> SpanIds(const SealedBatch& batch) {
  std::vector<uint64_t> ids;
  const v1::SpanBatch parsed = ToSpanBatch(batch);
  for (const v1::Span& span : parsed.spans()) ids.push_back(span.span_id());
  return ids;
}

TEST(SpanBuffer, SealsABatchWhenItIsFull) {
  CounterSet counters;
  SpanBuffer buffer({/*max_spans=*/100, /*batch_max_spans=*/3, absl::Seconds(10)}, &counters);
  for (uint64_t i = 1; i <= 4; ++i) EXPECT_TRUE(buffer.Add(SpanNumber(i), kT0));
  auto batch = buffer.NextToSend();
  ASSERT_NE(batch, nullptr);
  EXPECT_EQ(batch->batch_id, 1u);
  EXPECT_EQ(SpanIds(*batch), (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(buffer.NextToSend(), nullptr);  // span 4 waits in the open batch
  EXPECT_EQ(buffer.spans_held(), 4u);
  EXPECT_EQ(counters.batches_sent.load(), 1u);
}

TEST(SpanBuffer, SealsABatchWhenItIsOld) {
  CounterSet counters;
  SpanBuffer buffer({100, 500, absl::Milliseconds(200)}, &counters);
  buffer.Add(SpanNumber(1), kT0);
  buffer.Add(SpanNumber(2), kT0 + absl::Milliseconds(150));
  buffer.SealDue(kT0 + absl::Milliseconds(199));
  EXPECT_EQ(buffer.NextToSend(), nullptr);
  buffer.SealDue(kT0 + absl::Milliseconds(200));
  auto batch = buffer.NextToSend();
  ASSERT_NE(batch, nullptr);
  EXPECT_EQ(SpanIds(*batch), (std::vector<uint64_t>{1, 2}));
}

TEST(SpanBuffer, BatchIdsIncreaseFromOne) {
  CounterSet counters;
  SpanBuffer buffer({100, 1, absl::Seconds(1)}, &counters);
  for (uint64_t i = 1; i <= 5; ++i) buffer.Add(SpanNumber(i), kT0);
  for (uint64_t id = 1; id <= 5; ++id) {
    auto batch = buffer.NextToSend();
    ASSERT_NE(batch, nullptr);
    EXPECT_EQ(batch->batch_id, id);
  }
}

TEST(SpanBuffer, DropsAndCountsSpansBeyondItsBound) {
  CounterSet counters;
  SpanBuffer buffer({/*max_spans=*/5, /*batch_max_spans=*/2, absl::Seconds(1)}, &counters);
  int added = 0;
  for (uint64_t i = 1; i <= 8; ++i) added += buffer.Add(SpanNumber(i), kT0) ? 1 : 0;
  EXPECT_EQ(added, 5);
  EXPECT_EQ(counters.spans_dropped.load(), 3u);
  EXPECT_EQ(buffer.spans_held(), 5u);
  // Acknowledged batches make room again.
  auto batch = buffer.NextToSend();
  ASSERT_NE(batch, nullptr);
  buffer.Ack(batch->batch_id);
  EXPECT_EQ(counters.batches_acked.load(), 1u);
  EXPECT_TRUE(buffer.Add(SpanNumber(9), kT0));
  EXPECT_TRUE(buffer.Add(SpanNumber(10), kT0));
  EXPECT_FALSE(buffer.Add(SpanNumber(11), kT0));
  EXPECT_EQ(counters.spans_dropped.load(), 4u);
}

TEST(SpanBuffer, ResendsEveryUnackedBatchInOrderAfterARewind) {
  CounterSet counters;
  SpanBuffer buffer({100, 1, absl::Seconds(1)}, &counters);
  for (uint64_t i = 1; i <= 4; ++i) buffer.Add(SpanNumber(i), kT0);
  for (int i = 0; i < 4; ++i) ASSERT_NE(buffer.NextToSend(), nullptr);
  EXPECT_EQ(buffer.NextToSend(), nullptr);
  buffer.Ack(2);
  buffer.Ack(42);  // unknown: ignored
  EXPECT_EQ(counters.batches_acked.load(), 1u);
  buffer.Add(SpanNumber(5), kT0);  // batch 5, never sent

  buffer.RewindForResend();
  std::vector<uint64_t> order;
  while (auto batch = buffer.NextToSend()) order.push_back(batch->batch_id);
  EXPECT_EQ(order, (std::vector<uint64_t>{1, 3, 4, 5}));
  EXPECT_EQ(counters.batches_resent.load(), 3u);
  EXPECT_EQ(counters.batches_sent.load(), 8u);
  EXPECT_EQ(buffer.unacked_batches(), 4u);
}

TEST(SpanBuffer, RewindWithNothingUnackedSendsOnlyNewBatches) {
  CounterSet counters;
  SpanBuffer buffer({100, 1, absl::Seconds(1)}, &counters);
  buffer.Add(SpanNumber(1), kT0);
  buffer.Ack(buffer.NextToSend()->batch_id);
  buffer.RewindForResend();
  EXPECT_EQ(buffer.NextToSend(), nullptr);
  buffer.Add(SpanNumber(2), kT0);
  auto batch = buffer.NextToSend();
  ASSERT_NE(batch, nullptr);
  EXPECT_EQ(batch->batch_id, 2u);
  EXPECT_EQ(counters.batches_resent.load(), 0u);
  EXPECT_TRUE(buffer.empty() == false);
  buffer.Ack(2);
  EXPECT_TRUE(buffer.empty());
}

// A batch takes its id when it opens: a rewind meanwhile must not skip it.
TEST(SpanBuffer, ABatchOpenDuringARewindIsSentWhenSealed) {
  CounterSet counters;
  SpanBuffer buffer({100, 2, absl::Seconds(10)}, &counters);
  buffer.Add(SpanNumber(1), kT0);
  buffer.RewindForResend();
  buffer.SealNow();
  auto batch = buffer.NextToSend();
  ASSERT_NE(batch, nullptr);
  EXPECT_EQ(batch->batch_id, 1u);
  EXPECT_EQ(SpanIds(*batch), (std::vector<uint64_t>{1}));
}

TEST(SpanBuffer, WaitNextToSendSealsByTimeAndWakes) {
  CounterSet counters;
  SpanBuffer buffer({100, 500, absl::Milliseconds(30)}, &counters);
  buffer.Add(SpanNumber(1), absl::Now());
  auto batch = buffer.WaitNextToSend(absl::Seconds(5));
  ASSERT_NE(batch, nullptr);
  EXPECT_EQ(batch->spans, 1u);

  // Nothing to send: Wake() ends the wait early.
  std::thread waker([&] {
    absl::SleepFor(absl::Milliseconds(50));
    buffer.Wake();
  });
  const absl::Time start = absl::Now();
  EXPECT_EQ(buffer.WaitNextToSend(absl::Seconds(30)), nullptr);
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  waker.join();
}

// A span as the span builder makes them for an HTTP exchange.
v1::Span HttpSpan(uint64_t n, const std::string& path) {
  v1::Span span;
  span.set_span_id(n);
  span.set_kind(v1::SPAN_KIND_SERVER);
  span.set_service("checkout-service");
  span.set_process("nginx");
  span.set_node("node-a.cluster.local");
  span.set_name("GET " + path);
  span.mutable_local()->set_ip(std::string("\x0a\x00\x00\x02", 4));
  span.mutable_local()->set_port(8080);
  span.mutable_peer()->set_ip(std::string(16, '\x01'));
  span.mutable_peer()->set_port(40001);
  (*span.mutable_attributes())["http.request.method"] = "GET";
  (*span.mutable_attributes())["url.path"] = path;
  (*span.mutable_attributes())["http.response.status_code"] = "200";
  return span;
}

TEST(SpanBuffer, ASealedBatchIsTheSpanBatchOfItsSpans) {
  CounterSet counters;
  SpanBuffer buffer({100, 2, absl::Seconds(10)}, &counters);
  std::vector<v1::Span> spans;
  for (uint64_t i = 1; i <= 4; ++i) {
    spans.push_back(HttpSpan(i, "/p" + std::to_string(i)));
    buffer.Add(SpanRecordViewOf(spans.back()), kT0);
  }
  for (uint64_t id = 1; id <= 2; ++id) {
    auto batch = buffer.NextToSend();
    ASSERT_NE(batch, nullptr);
    EXPECT_EQ(batch->batch_id, id);
    EXPECT_EQ(batch->spans, 2u);
    v1::SpanBatch expected;
    expected.set_batch_id(id);
    *expected.add_spans() = spans[2 * (id - 1)];
    *expected.add_spans() = spans[2 * (id - 1) + 1];
    v1::SpanBatch parsed;
    ASSERT_TRUE(parsed.ParseFromString(std::string(batch->wire())));
    EXPECT_EQ(parsed.DebugString(), expected.DebugString());
    // Byte for byte what protobuf writes (a span's one attribute makes its map's order
    // moot).
    v1::SpanBatch one_attribute = expected;
    for (v1::Span& span : *one_attribute.mutable_spans()) {
      span.mutable_attributes()->erase("http.request.method");
      span.mutable_attributes()->erase("http.response.status_code");
    }
    SpanBuffer single({100, 2, absl::Seconds(10)}, &counters);
    for (const v1::Span& span : one_attribute.spans()) single.Add(SpanRecordViewOf(span), kT0);
    one_attribute.set_batch_id(1);
    EXPECT_EQ(single.NextToSend()->wire(), one_attribute.SerializeAsString());
  }
}

// bytes_held() is what the heap really holds for the spans in the buffer, as glibc's
// malloc counts it (mallinfo2: in-use bytes, headers and rounding included), within 10 %.
TEST(SpanBuffer, BytesHeldIsWhatTheHeapHolds) {
  for (const std::string& path : {std::string("/"), "/cart/items/" + std::string(80, 'x')}) {
    // Thousands of spans: glibc keeps a few small freed chunks aside and counts them in use.
    for (const size_t spans : {size_t{1250}, size_t{5000}}) {
      CounterSet counters;
      SpanBufferOptions options;
      options.batch_max_spans = 500;
      std::vector<v1::Span> made;
      for (size_t i = 0; i < spans; ++i) made.push_back(HttpSpan(i, path));
      const size_t before = mallinfo2().uordblks;
      auto buffer = std::make_unique<SpanBuffer>(options, &counters);
      const size_t empty = mallinfo2().uordblks - before;
      for (const v1::Span& span : made) ASSERT_TRUE(buffer->Add(SpanRecordViewOf(span), kT0));
      const double real = static_cast<double>(mallinfo2().uordblks - before - empty);
      const double held = static_cast<double>(buffer->bytes_held());
      EXPECT_GT(held, real * 0.9) << path << ", " << spans << " spans: heap " << real;
      EXPECT_LT(held, real * 1.1) << path << ", " << spans << " spans: heap " << real;
    }
  }
}

TEST(SpanBuffer, DropsAndCountsSpansBeyondItsMemoryBound) {
  CounterSet counters;
  SpanBufferOptions options;
  options.batch_max_spans = 4;
  options.max_bytes = 8 << 10;
  SpanBuffer buffer(options, &counters);
  size_t added = 0;
  for (uint64_t i = 1; i <= 200; ++i) {
    added += buffer.Add(SpanRecordViewOf(HttpSpan(i, "/a")), kT0) ? 1 : 0;
  }
  EXPECT_GT(added, 8u);
  EXPECT_LT(added, 200u);
  EXPECT_EQ(buffer.spans_held(), added);
  EXPECT_EQ(counters.spans_dropped.load(), 200 - added);
  EXPECT_LE(buffer.bytes_held(), options.max_bytes);
  // Nothing dropped wrongly: the next span would not have fitted.
  EXPECT_GT(buffer.bytes_held() + 2 * HttpSpan(0, "/a").ByteSizeLong(),
            options.max_bytes - (options.max_bytes / 4));
  // An acknowledged batch frees its share.
  const size_t held = buffer.bytes_held();
  auto batch = buffer.NextToSend();
  ASSERT_NE(batch, nullptr);
  buffer.Ack(batch->batch_id);
  EXPECT_LT(buffer.bytes_held(), held);
  EXPECT_TRUE(buffer.Add(SpanRecordViewOf(HttpSpan(201, "/a")), kT0));
}

}  // namespace
}  // namespace reptrace
