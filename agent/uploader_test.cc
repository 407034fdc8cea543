#include "agent/uploader.h"

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "agent/config_holder.h"
#include "agent/testing/recording_ingest.h"
#include "common/version.h"
#include "gtest/gtest.h"

namespace reptrace {
namespace {

using testing::TestController;

bool WaitFor(const std::function<bool()>& condition, absl::Duration timeout = absl::Seconds(10)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (condition()) return true;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return condition();
}

v1::Span SpanNumber(uint64_t n) {
  v1::Span span;
  span.set_span_id(n);
  span.set_name(absl::StrCat("span ", n));
  return span;
}

UploaderOptions Options(const std::string& address) {
  UploaderOptions options;
  options.controller = address;
  options.node = "node-a";
  options.agent_id = NewAgentId();
  options.hostname = "host-a";
  options.counters_interval = absl::Hours(1);
  return options;
}

TEST(NewAgentId, IsALowerCaseUuid) {
  const std::string id = NewAgentId();
  ASSERT_EQ(id.size(), 36u);
  EXPECT_EQ(id[8], '-');
  EXPECT_EQ(id[23], '-');
  EXPECT_EQ(id.find_first_not_of("0123456789abcdef-"), std::string::npos) << id;
  EXPECT_NE(NewAgentId(), id);
}

std::string BytesOf(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(buffer.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& slice : slices) {
    bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return bytes;
}

v1::AgentMessage ExpectedBatchMessage(const v1::AgentCounters& counters) {
  v1::AgentMessage expected;
  v1::SpanBatch& set = *expected.mutable_batch();
  set.set_batch_id(1);
  *set.add_spans() = SpanNumber(1);
  *set.add_spans() = SpanNumber(2);
  *set.mutable_counters() = counters;
  return expected;
}

TEST(BatchMessage, IsTheMessageWithTheBatchFieldSet) {
  CounterSet counters;
  SpanBuffer buffer({100, 2, absl::Hours(1)}, &counters);
  buffer.Add(SpanRecordViewOf(SpanNumber(1)), absl::Now());
  buffer.Add(SpanRecordViewOf(SpanNumber(2)), absl::Now());
  auto batch = buffer.NextToSend();
  ASSERT_NE(batch, nullptr);
  v1::AgentCounters snapshot;
  snapshot.set_events_received(17);
  snapshot.set_batches_sent(1);
  EXPECT_EQ(BytesOf(BatchMessage(batch, snapshot)),
            ExpectedBatchMessage(snapshot).SerializeAsString());
}

TEST(BatchMessage, KeepsTheBatchAliveOnceTheBufferForgetsIt) {
  CounterSet counters;
  SpanBuffer buffer({100, 2, absl::Hours(1)}, &counters);
  buffer.Add(SpanRecordViewOf(SpanNumber(1)), absl::Now());
  buffer.Add(SpanRecordViewOf(SpanNumber(2)), absl::Now());
  std::shared_ptr<const SealedBatch> batch = buffer.NextToSend();
  ASSERT_NE(batch, nullptr);
  std::weak_ptr<const SealedBatch> watch = batch;
  grpc::ByteBuffer message = BatchMessage(std::move(batch), v1::AgentCounters());
  buffer.Ack(1);
  ASSERT_FALSE(watch.expired());

  const grpc::ByteBuffer copy = message;  // as gRPC takes it
  message.Clear();
  EXPECT_EQ(BytesOf(copy), ExpectedBatchMessage(v1::AgentCounters()).SerializeAsString());
  EXPECT_FALSE(watch.expired());
}

TEST(BatchMessage, ReleasesTheBatchWithItsLastCopy) {
  CounterSet counters;
  SpanBuffer buffer({100, 1, absl::Hours(1)}, &counters);
  buffer.Add(SpanRecordViewOf(SpanNumber(1)), absl::Now());
  std::shared_ptr<const SealedBatch> batch = buffer.NextToSend();
  std::weak_ptr<const SealedBatch> watch = batch;
  {
    grpc::ByteBuffer message = BatchMessage(std::move(batch), v1::AgentCounters());
    const grpc::ByteBuffer copy = message;
    buffer.Ack(1);
  }
  EXPECT_TRUE(watch.expired());
}

TEST(Uploader, SendsHelloThenBatchesAndForgetsAcknowledgedOnes) {
  TestController controller(/*ack=*/true);
  ASSERT_TRUE(controller.started());
  CounterSet counters;
  ConfigHolder config;
  counters.events_received = 17;
  SpanBuffer buffer({100, 2, absl::Milliseconds(50)}, &counters);
  for (uint64_t i = 1; i <= 3; ++i) buffer.Add(SpanRecordViewOf(SpanNumber(i)), absl::Now());
  UploaderOptions options = Options(controller.address());
  Uploader uploader(options, &buffer, &counters, &config);
  uploader.Start();

  ASSERT_TRUE(WaitFor([&] { return buffer.empty(); }));
  EXPECT_EQ(counters.batches_acked.load(), 2u);
  const std::vector<v1::AgentMessage> messages = controller.service().messages();
  ASSERT_GE(messages.size(), 3u);
  ASSERT_TRUE(messages[0].has_hello());
  EXPECT_EQ(messages[0].hello().node(), "node-a");
  EXPECT_EQ(messages[0].hello().agent_id(), options.agent_id);
  EXPECT_EQ(messages[0].hello().agent_version(), kVersion);
  EXPECT_EQ(messages[0].hello().hostname(), "host-a");
  EXPECT_EQ(controller.service().batch_ids(), (std::vector<uint64_t>{1, 2}));
  ASSERT_TRUE(messages[1].has_batch());
  EXPECT_EQ(messages[1].batch().spans_size(), 2);
  EXPECT_EQ(messages[1].batch().spans(0).span_id(), 1u);
  EXPECT_EQ(messages[1].batch().counters().events_received(), 17u);
  EXPECT_TRUE(uploader.connected());
  uploader.Stop(absl::Seconds(2));
  EXPECT_FALSE(uploader.connected());
}

TEST(Uploader, ResendsUnacknowledgedBatchesToAControllerRestartedOnTheSamePort) {
  auto first = std::make_unique<TestController>(/*ack=*/false);
  ASSERT_TRUE(first->started());
  const int port = first->port();
  CounterSet counters;
  ConfigHolder config;
  SpanBuffer buffer({100, 2, absl::Milliseconds(20)}, &counters);
  UploaderOptions options = Options(first->address());
  Uploader uploader(options, &buffer, &counters, &config);
  uploader.Start();
  for (uint64_t i = 1; i <= 4; ++i) buffer.Add(SpanRecordViewOf(SpanNumber(i)), absl::Now());
  ASSERT_TRUE(WaitFor([&] { return first->service().batch_ids().size() == 2; }));
  EXPECT_EQ(buffer.unacked_batches(), 2u);

  first->Shutdown();
  TestController second(/*ack=*/true, port);
  ASSERT_TRUE(second.started());
  // Batch 3, sealed while the stream is down or up.
  buffer.Add(SpanRecordViewOf(SpanNumber(5)), absl::Now());

  ASSERT_TRUE(WaitFor([&] { return buffer.empty(); }))
      << "unacked batches: " << buffer.unacked_batches();
  const std::vector<v1::AgentMessage> messages = second.service().messages();
  ASSERT_FALSE(messages.empty());
  ASSERT_TRUE(messages[0].has_hello());
  EXPECT_EQ(messages[0].hello().agent_id(), options.agent_id);
  EXPECT_EQ(second.service().batch_ids(), (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(messages[1].batch().spans(0).span_id(), 1u);
  EXPECT_GE(counters.batches_resent.load(), 2u);
  EXPECT_GE(uploader.streams_opened(), 2u);
  uploader.Stop(absl::Seconds(2));
}

TEST(Uploader, SendsCountersOnTheirOwn) {
  TestController controller(/*ack=*/true);
  CounterSet counters;
  ConfigHolder config;
  counters.records_malformed = 3;
  SpanBuffer buffer({100, 2, absl::Milliseconds(20)}, &counters);
  UploaderOptions options = Options(controller.address());
  options.counters_interval = absl::Milliseconds(50);
  Uploader uploader(options, &buffer, &counters, &config);
  uploader.Start();
  ASSERT_TRUE(WaitFor([&] {
    int n = 0;
    for (const auto& m : controller.service().messages()) n += m.has_counters() ? 1 : 0;
    return n >= 2;
  }));
  for (const auto& m : controller.service().messages()) {
    if (m.has_counters()) {
      EXPECT_EQ(m.counters().records_malformed(), 3u);
    }
  }
  uploader.Stop(absl::Seconds(2));
}

TEST(Uploader, StopFlushesTheOpenBatch) {
  TestController controller(/*ack=*/true);
  CounterSet counters;
  ConfigHolder config;
  SpanBuffer buffer({100, 500, absl::Hours(1)}, &counters);
  Uploader uploader(Options(controller.address()), &buffer, &counters, &config);
  uploader.Start();
  buffer.Add(SpanRecordViewOf(SpanNumber(1)), absl::Now());
  uploader.Stop(absl::Seconds(2));
  EXPECT_TRUE(buffer.empty());
  EXPECT_EQ(controller.service().batch_ids(), (std::vector<uint64_t>{1}));
}

TEST(Uploader, StopIsBoundedWhenTheControllerIsDown) {
  std::string address;
  {
    TestController gone(/*ack=*/true);
    address = gone.address();
  }
  CounterSet counters;
  ConfigHolder config;
  SpanBuffer buffer({100, 500, absl::Hours(1)}, &counters);
  Uploader uploader(Options(address), &buffer, &counters, &config);
  uploader.Start();
  buffer.Add(SpanRecordViewOf(SpanNumber(1)), absl::Now());
  absl::SleepFor(absl::Milliseconds(300));  // a few failed attempts
  EXPECT_FALSE(uploader.connected());
  const absl::Time start = absl::Now();
  uploader.Stop(absl::Milliseconds(500));
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  EXPECT_EQ(buffer.spans_held(), 1u);
  EXPECT_EQ(counters.batches_acked.load(), 0u);
}

v1::ConfigVersion ConfigNumber(uint64_t version) {
  v1::ConfigVersion config;
  config.set_version(version);
  config.set_author("test");
  config.mutable_config()->set_enabled(true);
  config.mutable_config()->mutable_sampling()->set_probability(0.5);
  return config;
}

std::vector<uint64_t> ConfigsApplied(const testing::RecordingIngest& service) {
  std::vector<uint64_t> versions;
  for (const auto& m : service.messages()) {
    if (m.has_config_applied()) versions.push_back(m.config_applied().version());
  }
  return versions;
}

TEST(Uploader, HoldsAPushedConfigAndAcknowledgesItsVersion) {
  TestController controller(/*ack=*/true);
  ASSERT_TRUE(controller.started());
  controller.service().set_config(ConfigNumber(3));
  CounterSet counters;
  SpanBuffer buffer({100, 2, absl::Hours(1)}, &counters);
  ConfigHolder config;
  Uploader uploader(Options(controller.address()), &buffer, &counters, &config);
  uploader.Start();

  ASSERT_TRUE(WaitFor([&] { return !ConfigsApplied(controller.service()).empty(); },
                      absl::Seconds(2)));
  EXPECT_EQ(ConfigsApplied(controller.service()), (std::vector<uint64_t>{3}));
  EXPECT_EQ(config.version(), 3u);
  EXPECT_EQ(config.current().config().sampling().probability(), 0.5);

  controller.service().PushConfig(ConfigNumber(4));  // a change, on the open stream
  ASSERT_TRUE(WaitFor([&] { return config.version() == 4; }, absl::Seconds(2)));
  EXPECT_TRUE(WaitFor([&] { return ConfigsApplied(controller.service()).size() == 2; },
                      absl::Seconds(2)));
  EXPECT_EQ(ConfigsApplied(controller.service()), (std::vector<uint64_t>{3, 4}));
  uploader.Stop(absl::Seconds(2));
}

TEST(Uploader, AcknowledgesTheSameConfigAgainAfterReconnecting) {
  auto first = std::make_unique<TestController>(/*ack=*/true);
  ASSERT_TRUE(first->started());
  const int port = first->port();
  first->service().set_config(ConfigNumber(2));
  CounterSet counters;
  SpanBuffer buffer({100, 2, absl::Hours(1)}, &counters);
  ConfigHolder config;
  UploaderOptions options = Options(first->address());
  options.initial_backoff = absl::Milliseconds(20);
  Uploader uploader(options, &buffer, &counters, &config);
  uploader.Start();
  ASSERT_TRUE(WaitFor([&] { return !ConfigsApplied(first->service()).empty(); }));
  first->Shutdown();

  TestController second(/*ack=*/true, port);
  ASSERT_TRUE(second.started());
  second.service().set_config(ConfigNumber(2));
  ASSERT_TRUE(WaitFor([&] { return !ConfigsApplied(second.service()).empty(); }));
  EXPECT_EQ(ConfigsApplied(second.service()), (std::vector<uint64_t>{2}));
  EXPECT_EQ(config.version(), 2u);
  uploader.Stop(absl::Seconds(2));
}

}  // namespace
}  // namespace reptrace
