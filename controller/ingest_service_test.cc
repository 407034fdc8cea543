// The controller's gRPC services through a real server on 127.0.0.1:0, real client
// stubs and a real PostgreSQL.
#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/sync_stream.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>
#include <pqxx/pqxx>

#include "common/ids.h"
#include "absl/time/clock.h"
#include "controller/config_validation.h"
#include "controller/controller_server.h"
#include "controller/store.h"
#include "controller/testing/spans.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/reptrace.grpc.pb.h"
#include "tests/testing/test_database.h"

namespace reptrace::controller {
namespace {

using ::testing::HasSubstr;
using testing::Batch;
using testing::ClientSpan;
using testing::Flow;
using testing::Ipv4;
using testing::ServerSpan;

constexpr int64_t kT0 = 1'763'000'000'000'000'000;

using IngestStream = grpc::ClientReaderWriter<v1::AgentMessage, v1::ControllerMessage>;

class ControllerServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(db_.ok());
    auto store = Store::Open(db_.conninfo());
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    auto server = ControllerServer::Start("127.0.0.1:0", *store_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    ASSERT_NE(server_->port(), 0);
    channel_ = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
    ingest_ = v1::IngestService::NewStub(channel_);
    query_ = v1::QueryService::NewStub(channel_);
  }

  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(1));
    server_.reset();
  }

  static v1::AgentMessage Hello(const std::string& agent_id) {
    v1::AgentMessage message;
    message.mutable_hello()->set_agent_id(agent_id);
    message.mutable_hello()->set_node("node-1");
    message.mutable_hello()->set_agent_version("0.1.0");
    message.mutable_hello()->set_hostname("host-1");
    return message;
  }

  static v1::AgentMessage BatchMessage(const v1::SpanBatch& batch) {
    v1::AgentMessage message;
    *message.mutable_batch() = batch;
    return message;
  }

  // Sends `batch` and returns the ack that comes back (skipping config pushes).
  static v1::BatchAck SendBatch(IngestStream& stream, const v1::SpanBatch& batch) {
    EXPECT_TRUE(stream.Write(BatchMessage(batch)));
    v1::ControllerMessage reply;
    do {
      EXPECT_TRUE(stream.Read(&reply));
    } while (reply.has_config());
    EXPECT_TRUE(reply.has_ack()) << reply.DebugString();
    return reply.ack();
  }

  static v1::AgentMessage ConfigApplied(uint64_t version) {
    v1::AgentMessage message;
    message.mutable_config_applied()->set_version(version);
    return message;
  }

  reptrace::testing::TestDatabase db_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<ControllerServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::IngestService::Stub> ingest_;
  std::unique_ptr<v1::QueryService::Stub> query_;
};

const Flow kFlow{Ipv4(10, 0, 0, 1, 40000), Ipv4(10, 0, 0, 2, 80)};

TEST_F(ControllerServerTest, HelloThenBatchesAreStoredAndAcknowledged) {
  grpc::ClientContext context;
  auto stream = ingest_->Connect(&context);
  ASSERT_TRUE(stream->Write(Hello("agent-a")));

  const v1::SpanBatch first =
      Batch(1, {ClientSpan({.span_id = 11, .service = "curl", .flow = kFlow, .start_ns = kT0})});
  const v1::SpanBatch second = Batch(
      2, {ServerSpan({.span_id = 12, .service = "nginx", .flow = kFlow, .start_ns = kT0 + 1000})});
  const v1::BatchAck ack1 = SendBatch(*stream, first);
  const v1::BatchAck ack2 = SendBatch(*stream, second);
  const v1::BatchAck resent = SendBatch(*stream, first);
  stream->WritesDone();
  const grpc::Status status = stream->Finish();

  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(ack1.batch_id(), 1u);
  EXPECT_FALSE(ack1.duplicate());
  EXPECT_EQ(ack2.batch_id(), 2u);
  EXPECT_FALSE(ack2.duplicate());
  EXPECT_EQ(resent.batch_id(), 1u);
  EXPECT_TRUE(resent.duplicate());

  grpc::ClientContext get_context;
  v1::GetTraceRequest request;
  request.set_trace_id(FormatId(12));
  v1::Trace trace;
  ASSERT_TRUE(query_->GetTrace(&get_context, request, &trace).ok());
  EXPECT_EQ(trace.trace_id(), 11u);
  ASSERT_EQ(trace.spans_size(), 2);
  EXPECT_EQ(trace.spans(1).parent_span_id(), 11u);

  grpc::ClientContext agents_context;
  v1::ListAgentsResponse agents;
  ASSERT_TRUE(query_->ListAgents(&agents_context, v1::ListAgentsRequest(), &agents).ok());
  ASSERT_EQ(agents.agents_size(), 1);
  EXPECT_EQ(agents.agents(0).agent_id(), "agent-a");
  EXPECT_EQ(agents.agents(0).batches_stored(), 2u);
  EXPECT_EQ(agents.agents(0).spans_stored(), 2u);
  EXPECT_FALSE(agents.agents(0).connected());  // the stream has ended
}

TEST_F(ControllerServerTest, ABatchBeforeHelloIsRefusedAndTheServerServesTheNextStream) {
  {
    grpc::ClientContext context;
    auto stream = ingest_->Connect(&context);
    stream->Write(BatchMessage(Batch(1, {})));
    stream->WritesDone();
    const grpc::Status status = stream->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("hello"));
  }
  {
    grpc::ClientContext context;
    auto stream = ingest_->Connect(&context);
    v1::AgentMessage nameless = Hello("");
    stream->Write(nameless);
    stream->WritesDone();
    const grpc::Status status = stream->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("agent_id"));
  }
  grpc::ClientContext context;
  auto stream = ingest_->Connect(&context);
  ASSERT_TRUE(stream->Write(Hello("agent-b")));
  const v1::BatchAck ack = SendBatch(
      *stream,
      Batch(1, {ClientSpan({.span_id = 21, .service = "curl", .flow = kFlow, .start_ns = kT0})}));
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(ack.batch_id(), 1u);
  EXPECT_FALSE(ack.duplicate());
}

TEST_F(ControllerServerTest, GarbageSpansAreCountedAndDroppedTheRestIsStored) {
  v1::Span zero_id = ClientSpan({.span_id = 0, .service = "curl", .flow = kFlow, .start_ns = kT0});
  v1::Span no_kind = ClientSpan({.span_id = 32, .service = "curl", .flow = kFlow, .start_ns = kT0});
  no_kind.set_kind(v1::SPAN_KIND_UNSPECIFIED);
  v1::Span backwards =
      ClientSpan({.span_id = 33, .service = "curl", .flow = kFlow, .start_ns = kT0});
  backwards.set_end_ns(kT0 - 1);
  const v1::Span good =
      ClientSpan({.span_id = 31, .service = "curl", .flow = kFlow, .start_ns = kT0});

  grpc::ClientContext context;
  auto stream = ingest_->Connect(&context);
  ASSERT_TRUE(stream->Write(Hello("agent-c")));
  const v1::BatchAck ack = SendBatch(*stream, Batch(7, {zero_id, no_kind, good, backwards}));
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());

  EXPECT_EQ(ack.batch_id(), 7u);
  EXPECT_FALSE(ack.duplicate());
  pqxx::connection conn(db_.conninfo());
  pqxx::nontransaction tx(conn);
  EXPECT_EQ(tx.exec1("SELECT count(*) FROM spans")[0].as<int>(), 1);
  EXPECT_EQ(tx.exec1("SELECT span_id FROM spans")[0].as<int64_t>(), 31);
  EXPECT_EQ(tx.exec1("SELECT spans_rejected FROM agents WHERE agent_id = 'agent-c'")[0]
                .as<int>(),
            3);
}

TEST_F(ControllerServerTest, ADatabaseErrorEndsTheStreamUnavailableAndNothingIsLost) {
  const v1::SpanBatch first =
      Batch(1, {ClientSpan({.span_id = 41, .service = "curl", .flow = kFlow, .start_ns = kT0})});
  const v1::SpanBatch second = Batch(
      2, {ServerSpan({.span_id = 42, .service = "nginx", .flow = kFlow, .start_ns = kT0 + 1000})});
  {
    grpc::ClientContext context;
    auto stream = ingest_->Connect(&context);
    ASSERT_TRUE(stream->Write(Hello("agent-d")));
    EXPECT_FALSE(SendBatch(*stream, first).duplicate());
    {
      // The database drops the stream's connection (a restart, a failover).
      pqxx::connection admin(db_.conninfo());
      pqxx::nontransaction tx(admin);
      tx.exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
              " WHERE datname = current_database() AND pid <> pg_backend_pid()");
    }
    stream->Write(BatchMessage(second));
    v1::ControllerMessage reply;
    EXPECT_FALSE(stream->Read(&reply)) << reply.DebugString();
    const grpc::Status status = stream->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  }
  // The agent reconnects and resends what was not acknowledged.
  grpc::ClientContext context;
  auto stream = ingest_->Connect(&context);
  ASSERT_TRUE(stream->Write(Hello("agent-d")));
  EXPECT_TRUE(SendBatch(*stream, first).duplicate());
  EXPECT_FALSE(SendBatch(*stream, second).duplicate());
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());

  auto trace = store_->GetTrace(42);
  ASSERT_TRUE(trace.ok()) << trace.status();
  EXPECT_EQ(trace->trace_id(), 41u);
  EXPECT_EQ(trace->spans_size(), 2);
}

TEST_F(ControllerServerTest, AnAgentStreamGetsTheCurrentConfigRightAfterItsHello) {
  auto set = store_->SetConfig(DefaultConfig(), 1, "test");
  ASSERT_TRUE(set.ok()) << set.status();
  grpc::ClientContext context;
  auto stream = ingest_->Connect(&context);
  ASSERT_TRUE(stream->Write(Hello("agent-cfg")));

  v1::ControllerMessage reply;
  ASSERT_TRUE(stream->Read(&reply));
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());

  ASSERT_TRUE(reply.has_config()) << reply.DebugString();
  EXPECT_EQ(reply.config().version(), 2u);
  EXPECT_EQ(reply.config().author(), "test");
}

TEST_F(ControllerServerTest, AConfigChangeReachesAConnectedAgentWithinTwoSeconds) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto stream = ingest_->Connect(&context);
  ASSERT_TRUE(stream->Write(Hello("agent-push")));
  v1::ControllerMessage first;
  ASSERT_TRUE(stream->Read(&first));
  ASSERT_EQ(first.config().version(), 1u);

  v1::TraceConfig changed = DefaultConfig();
  changed.mutable_sampling()->set_probability(0.5);
  const absl::Time set_at = absl::Now();
  auto set = store_->SetConfig(changed, 1, "operator");
  ASSERT_TRUE(set.ok()) << set.status();
  v1::ControllerMessage pushed;
  ASSERT_TRUE(stream->Read(&pushed));
  const absl::Duration took = absl::Now() - set_at;
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());

  ASSERT_TRUE(pushed.has_config()) << pushed.DebugString();
  EXPECT_EQ(pushed.config().version(), 2u);
  EXPECT_EQ(pushed.config().config().sampling().probability(), 0.5);
  EXPECT_LT(took, absl::Seconds(2));
}

TEST_F(ControllerServerTest, ConfigAppliedIsStoredAndListed) {
  grpc::ClientContext context;
  auto stream = ingest_->Connect(&context);
  ASSERT_TRUE(stream->Write(Hello("agent-ack")));
  v1::ControllerMessage config;
  ASSERT_TRUE(stream->Read(&config));
  ASSERT_TRUE(stream->Write(ConfigApplied(config.config().version())));
  // A batch after it: its ack means the ConfigApplied before it was handled.
  EXPECT_EQ(SendBatch(*stream, Batch(1, {})).batch_id(), 1u);

  grpc::ClientContext agents_context;
  v1::ListAgentsResponse agents;
  ASSERT_TRUE(query_->ListAgents(&agents_context, v1::ListAgentsRequest(), &agents).ok());
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
  ASSERT_EQ(agents.agents_size(), 1);
  EXPECT_EQ(agents.agents(0).config_version(), 1u);
}

TEST_F(ControllerServerTest, QueriesReportBadAndUnknownIds) {
  grpc::ClientContext bad_context;
  v1::GetTraceRequest bad;
  bad.set_trace_id("not-hex");
  v1::Trace trace;
  EXPECT_EQ(query_->GetTrace(&bad_context, bad, &trace).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  grpc::ClientContext unknown_context;
  v1::GetTraceRequest unknown;
  unknown.set_trace_id("00000000000000ff");
  EXPECT_EQ(query_->GetTrace(&unknown_context, unknown, &trace).error_code(),
            grpc::StatusCode::NOT_FOUND);

  grpc::ClientContext list_context;
  v1::ListTracesResponse traces;
  EXPECT_TRUE(query_->ListTraces(&list_context, v1::ListTracesRequest(), &traces).ok());
  EXPECT_EQ(traces.traces_size(), 0);
}

TEST_F(ControllerServerTest, HealthServiceReportsServing) {
  grpc::GenericStub generic(channel_);
  grpc::ClientContext context;
  grpc::Slice empty("");
  grpc::ByteBuffer request(&empty, 1);  // HealthCheckRequest{service: ""}
  grpc::ByteBuffer response;
  std::promise<grpc::Status> done;
  generic.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request,
                    &response, [&done](grpc::Status status) { done.set_value(status); });
  const grpc::Status status = done.get_future().get();
  ASSERT_TRUE(status.ok()) << status.error_message();

  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& slice : slices) {
    bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  EXPECT_EQ(bytes, std::string("\x08\x01", 2));  // HealthCheckResponse{status: SERVING}
}

TEST_F(ControllerServerTest, AnOldStreamEndingAfterTheAgentReconnectedLeavesItConnected) {
  // The agent gave up on its first stream and reconnected before the controller noticed
  // the first one was gone.
  grpc::ClientContext old_context;
  auto old_stream = ingest_->Connect(&old_context);
  ASSERT_TRUE(old_stream->Write(Hello("agent-r")));
  EXPECT_EQ(SendBatch(*old_stream, Batch(1, {})).batch_id(), 1u);  // hello was handled
  grpc::ClientContext new_context;
  auto new_stream = ingest_->Connect(&new_context);
  ASSERT_TRUE(new_stream->Write(Hello("agent-r")));
  EXPECT_EQ(SendBatch(*new_stream, Batch(2, {})).batch_id(), 2u);

  old_stream->WritesDone();
  EXPECT_TRUE(old_stream->Finish().ok());

  auto agents = store_->ListAgents();
  ASSERT_TRUE(agents.ok()) << agents.status();
  ASSERT_EQ(agents->size(), 1u);
  EXPECT_TRUE(agents->front().connected());
  new_stream->WritesDone();
  EXPECT_TRUE(new_stream->Finish().ok());
  agents = store_->ListAgents();
  ASSERT_TRUE(agents.ok()) << agents.status();
  EXPECT_FALSE(agents->front().connected());
}

TEST_F(ControllerServerTest, ABatchOfTenThousandLongSpansIsStoredAndAcknowledged) {
  constexpr int kSpans = 10'000;
  std::vector<v1::Span> spans;
  for (int i = 0; i < kSpans; ++i) {
    const Flow flow{Ipv4(10, 1, i / 256, i % 256, 40000), Ipv4(10, 0, 0, 2, 80)};
    spans.push_back(i % 2 == 0
        ? ClientSpan({.span_id = 100'000 + uint64_t(i), .service = "client", .flow = flow,
                      .start_ns = kT0 + i * 1000,
                      .name = "GET /" + std::string(500, 'a' + i % 26)})
        : ServerSpan({.span_id = 100'000 + uint64_t(i), .service = "server",
                      .flow = Flow{Ipv4(10, 1, (i - 1) / 256, (i - 1) % 256, 40000),
                                   Ipv4(10, 0, 0, 2, 80)},
                      .start_ns = kT0 + i * 1000,
                      .name = "GET /" + std::string(500, 'a' + i % 26)}));
  }
  const v1::SpanBatch batch = Batch(1, spans);
  ASSERT_GT(batch.ByteSizeLong(), 4u << 20);  // above gRPC's default receive limit

  grpc::ClientContext context;
  auto stream = ingest_->Connect(&context);
  ASSERT_TRUE(stream->Write(Hello("agent-big")));
  ASSERT_TRUE(stream->Write(BatchMessage(batch)));
  v1::ControllerMessage reply;
  ASSERT_TRUE(stream->Read(&reply)) << stream->Finish().error_message();
  ASSERT_TRUE(reply.has_config());  // pushed right after the hello
  ASSERT_TRUE(stream->Read(&reply)) << stream->Finish().error_message();
  EXPECT_EQ(reply.ack().batch_id(), 1u);
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());

  auto traces = store_->ListTraces("", 1000);
  ASSERT_TRUE(traces.ok()) << traces.status();
  ASSERT_EQ(traces->size(), 1000u);
  for (const auto& trace : *traces) EXPECT_EQ(trace.span_count(), 2);
}

// A raw bidirectional stream to the ingest service, to send bytes no stub would send.
std::unique_ptr<grpc::ClientReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>> RawIngestStream(
    const std::shared_ptr<grpc::Channel>& channel, grpc::ClientContext* context) {
  return std::unique_ptr<grpc::ClientReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>>(
      grpc::internal::ClientReaderWriterFactory<grpc::ByteBuffer, grpc::ByteBuffer>::Create(
          channel.get(),
          grpc::internal::RpcMethod("/reptrace.v1.IngestService/Connect",
                                    grpc::internal::RpcMethod::BIDI_STREAMING, channel),
          context));
}

grpc::ByteBuffer Bytes(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

TEST_F(ControllerServerTest, ASpanThatIsNotUtf8IsDroppedAndCountedTheBatchIsStored) {
  // What an agent sends when a span name holds bytes that are not UTF-8 (an HTTP path
  // with raw bytes): protobuf refuses to parse the whole message.
  v1::AgentMessage message = BatchMessage(Batch(
      9, {ClientSpan({.span_id = 51, .service = "curl", .flow = kFlow, .start_ns = kT0,
                      .name = "GET /@@@@"}),
          ServerSpan({.span_id = 52, .service = "nginx", .flow = kFlow,
                      .start_ns = kT0 + 1000})}));
  std::string bytes = message.SerializeAsString();
  bytes.replace(bytes.find("@@@@"), 4, "\xff\xfe\xfd\xfc");
  ASSERT_FALSE(v1::AgentMessage().ParseFromString(bytes));

  grpc::ClientContext context;
  auto stream = RawIngestStream(channel_, &context);
  ASSERT_TRUE(stream->Write(Bytes(Hello("agent-u").SerializeAsString())));
  ASSERT_TRUE(stream->Write(Bytes(bytes)));
  v1::ControllerMessage reply;
  do {
    grpc::ByteBuffer reply_bytes;
    ASSERT_TRUE(stream->Read(&reply_bytes)) << stream->Finish().error_message();
    ASSERT_TRUE(grpc::SerializationTraits<v1::ControllerMessage>::Deserialize(&reply_bytes,
                                                                              &reply)
                    .ok());
  } while (reply.has_config());
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());

  EXPECT_EQ(reply.ack().batch_id(), 9u);
  pqxx::connection conn(db_.conninfo());
  pqxx::nontransaction tx(conn);
  EXPECT_EQ(tx.exec1("SELECT count(*) FROM spans")[0].as<int>(), 1);
  EXPECT_EQ(tx.exec1("SELECT span_id FROM spans")[0].as<int64_t>(), 52);
  EXPECT_EQ(tx.exec1("SELECT spans_rejected FROM agents")[0].as<int>(), 1);
}

TEST_F(ControllerServerTest, AMessageThatCannotBeParsedEndsTheStreamWithAnError) {
  grpc::ClientContext context;
  auto stream = RawIngestStream(channel_, &context);
  ASSERT_TRUE(stream->Write(Bytes(Hello("agent-g").SerializeAsString())));
  stream->Write(Bytes("\x0a\x05garbage-that-is-no-message"));
  grpc::ByteBuffer reply;
  EXPECT_TRUE(stream->Read(&reply));  // the config, pushed right after the hello
  EXPECT_FALSE(stream->Read(&reply));
  const grpc::Status status = stream->Finish();

  // Not OK: an agent must not take this for an orderly end.
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("cannot be parsed"));
}

// grpc's reflection service, spoken with hand-encoded messages (no reflection client
// library is installed): list the services, then fetch the file defining ours.
class ReflectionClient {
 public:
  explicit ReflectionClient(const std::shared_ptr<grpc::Channel>& channel)
      : stream_(grpc::internal::ClientReaderWriterFactory<grpc::ByteBuffer, grpc::ByteBuffer>::
                    Create(channel.get(),
                           grpc::internal::RpcMethod(
                               "/grpc.reflection.v1alpha.ServerReflection/"
                               "ServerReflectionInfo",
                               grpc::internal::RpcMethod::BIDI_STREAMING, channel),
                           &context_)) {}
  ~ReflectionClient() {
    stream_->WritesDone();
    stream_->Finish();
  }

  // ServerReflectionRequest with string field `field` = `value`; returns the
  // response's fields as (number, bytes) of its length-delimited fields.
  std::vector<std::pair<int, std::string>> Ask(int field, const std::string& value) {
    std::string request;
    {
      google::protobuf::io::StringOutputStream out(&request);
      google::protobuf::io::CodedOutputStream coded(&out);
      google::protobuf::internal::WireFormatLite::WriteString(field, value, &coded);
    }
    grpc::Slice slice(request);
    grpc::ByteBuffer response;
    if (!stream_->Write(grpc::ByteBuffer(&slice, 1)) || !stream_->Read(&response)) return {};
    std::vector<grpc::Slice> slices;
    if (!response.Dump(&slices).ok()) return {};
    std::string bytes;
    for (const grpc::Slice& s : slices) {
      bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
    return Fields(bytes);
  }

  // The length-delimited fields of a serialized message.
  static std::vector<std::pair<int, std::string>> Fields(const std::string& message) {
    std::vector<std::pair<int, std::string>> fields;
    google::protobuf::io::CodedInputStream in(
        reinterpret_cast<const uint8_t*>(message.data()), static_cast<int>(message.size()));
    while (uint32_t tag = in.ReadTag()) {
      using google::protobuf::internal::WireFormatLite;
      if (WireFormatLite::GetTagWireType(tag) != WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
        if (!WireFormatLite::SkipField(&in, tag)) break;
        continue;
      }
      std::string value;
      if (!WireFormatLite::ReadString(&in, &value)) break;
      fields.emplace_back(WireFormatLite::GetTagFieldNumber(tag), std::move(value));
    }
    return fields;
  }

 private:
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>> stream_;
};

TEST_F(ControllerServerTest, ServerReflectionDescribesTheServices) {
  ReflectionClient reflection(channel_);

  // list_services (7) -> list_services_response (6) { service (1) { name (1) } }.
  std::vector<std::string> services;
  for (const auto& [number, value] : reflection.Ask(7, "")) {
    if (number != 6) continue;
    for (const auto& [n, service] : ReflectionClient::Fields(value)) {
      for (const auto& [m, name] : ReflectionClient::Fields(service)) {
        if (n == 1 && m == 1) services.push_back(name);
      }
    }
  }
  EXPECT_THAT(services, ::testing::IsSupersetOf({"reptrace.v1.IngestService",
                                                 "reptrace.v1.QueryService",
                                                 "reptrace.v1.ConfigService",
                                                 "grpc.health.v1.Health"}));

  // file_containing_symbol (4) -> file_descriptor_response (4) { file_descriptor_proto (1) }.
  std::vector<std::string> methods;
  for (const auto& [number, value] : reflection.Ask(4, "reptrace.v1.QueryService")) {
    if (number != 4) continue;
    for (const auto& [n, file_bytes] : ReflectionClient::Fields(value)) {
      google::protobuf::FileDescriptorProto file;
      if (n != 1 || !file.ParseFromString(file_bytes) || file.package() != "reptrace.v1") {
        continue;
      }
      for (const auto& service : file.service()) {
        for (const auto& method : service.method()) {
          methods.push_back(service.name() + "." + method.name());
        }
      }
    }
  }
  EXPECT_THAT(methods, ::testing::IsSupersetOf({"QueryService.GetTrace",
                                                "IngestService.Connect"}));
}

}  // namespace
}  // namespace reptrace::controller
