#include "agent/span_builder.h"

#include <arpa/inet.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "agent/span_wire.h"
#include "agent/testing/hook_script.h"
#include "common/endpoint.h"
#include "gtest/gtest.h"

namespace reptrace {
namespace {

using testing::HookScript;

std::string WireOf(const SpanRecord& span) {
  std::string out(SpanWireSizeBound(span), '\0');
  auto* begin = reinterpret_cast<uint8_t*>(&out[0]);
  out.resize(static_cast<size_t>(WriteSpanWire(span, begin) - begin));
  return out;
}

// What every test's sink checks: a span that carries its connection's wire bytes is
// written exactly as it is field by field (the bytes are those of its fields).
v1::Span Checked(const SpanRecord& span) {
  if (span.connection_wire != nullptr) {
    SpanRecord field_by_field = span;
    field_by_field.connection_wire = nullptr;
    EXPECT_EQ(WireOf(span), WireOf(field_by_field)) << span.name;
  }
  return ToSpanProto(span);
}

constexpr uint64_t kProcess = 77;
const absl::Time kT0 = absl::FromUnixSeconds(1700000000);

class SpanBuilderTest : public ::testing::Test {
 protected:
  SpanBuilderTest()
      : builder_("node-a",
                 [this](const SpanRecord& span) {
                   spans_.push_back(Checked(span));
                   if (span.connection_wire != nullptr) ++spans_with_connection_wire_;
                 }) {
    builder_.OnHello(kProcess, script_.Hello("shop", "shopd"));
  }

  void Feed(const EventRecord& event, absl::Time now = kT0) {
    builder_.OnEvent(kProcess, event, now);
  }
  // Records of another process (hook connection `key`).
  void FeedTo(uint64_t key, const EventRecord& event) { builder_.OnEvent(key, event, kT0); }
  void FeedTo(uint64_t key, const DataRecord& data) { builder_.OnData(key, data, kT0); }
  void Feed(const DataRecord& data, absl::Time now = kT0) {
    builder_.OnData(kProcess, data, now);
  }
  void Feed(const InbandRecord& inband, absl::Time now = kT0) {
    builder_.OnInband(kProcess, inband, now);
  }

  HookScript script_{4242};
  std::vector<v1::Span> spans_;
  size_t spans_with_connection_wire_ = 0;
  SpanBuilder builder_;
};

TEST_F(SpanBuilderTest, OneServerExchangeIsOneSpan) {
  const std::string request = "GET /cart?id=9 HTTP/1.1\r\nHost: shop\r\n\r\n";
  const std::string response = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
  Feed(script_.Accept(1, 7, 1000));
  Feed(script_.Recv(1, 7, 2000, request.substr(0, 10)));
  Feed(script_.Recv(1, 8, 2100, request.substr(10)));
  Feed(script_.Send(1, 7, 3000, response.substr(0, 20)));
  Feed(script_.Send(1, 7, 3500, response.substr(20)));
  EXPECT_TRUE(spans_.empty());  // still open: the connection may carry more
  Feed(script_.Close(1, 7, 4000));

  ASSERT_EQ(spans_.size(), 1u);
  const v1::Span& span = spans_[0];
  EXPECT_NE(span.span_id(), 0u);
  EXPECT_EQ(span.parent_span_id(), 0u);
  EXPECT_EQ(span.kind(), v1::SPAN_KIND_SERVER);
  EXPECT_EQ(span.service(), "shop");
  EXPECT_EQ(span.process(), "shopd");
  EXPECT_EQ(span.node(), "node-a");
  EXPECT_EQ(span.pid(), 4242u);
  EXPECT_EQ(span.tid(), 7u);
  EXPECT_EQ(span.start_ns(), 2000);
  EXPECT_EQ(span.end_ns(), 3500);
  EXPECT_EQ(span.request_offset(), 0u);
  EXPECT_EQ(span.request_bytes(), request.size());
  EXPECT_EQ(span.response_offset(), 0u);
  EXPECT_EQ(span.response_bytes(), response.size());
  // Fingerprints of the whole heads (here the whole messages), not of their first calls:
  // the same whatever calls the other end moved the bytes in.
  EXPECT_EQ(span.request_hash(), Fingerprint64(request.data(), request.size()));
  EXPECT_EQ(span.response_hash(), Fingerprint64(response.data(), response.size()));
  EXPECT_EQ(span.connection_id(), 1u);
  EXPECT_EQ(FormatEndpoint(span.local()), "10.0.0.2:8080");
  EXPECT_EQ(FormatEndpoint(span.peer()), "10.0.0.1:40001");
  EXPECT_EQ(span.name(), "GET /cart");
  EXPECT_EQ(span.attributes().at("http.request.method"), "GET");
  EXPECT_EQ(span.attributes().at("url.path"), "/cart");
  EXPECT_EQ(span.attributes().at("http.response.status_code"), "200");
  EXPECT_EQ(span.status(), v1::SPAN_STATUS_OK);
  EXPECT_EQ(builder_.spans_built(), 1u);
  EXPECT_EQ(builder_.open_spans(), 0u);
}

TEST_F(SpanBuilderTest, OneClientExchangeIsOneClientSpan) {
  Feed(script_.Connect(3, 5, 1000));
  Feed(script_.Send(3, 5, 1100, "POST /pay HTTP/1.1\r\n\r\n"));
  Feed(script_.Recv(3, 5, 1900, "HTTP/1.1 201 Created\r\n\r\n"));
  Feed(script_.Close(3, 5, 2000));
  ASSERT_EQ(spans_.size(), 1u);
  EXPECT_EQ(spans_[0].kind(), v1::SPAN_KIND_CLIENT);
  EXPECT_EQ(spans_[0].name(), "POST /pay");
  EXPECT_EQ(spans_[0].start_ns(), 1100);
  EXPECT_EQ(spans_[0].end_ns(), 1900);
  EXPECT_EQ(FormatEndpoint(spans_[0].peer()), "10.0.0.2:8080");
  EXPECT_EQ(FormatEndpoint(spans_[0].local()), "10.0.0.1:40003");
  EXPECT_EQ(spans_[0].attributes().at("http.response.status_code"), "201");
}

TEST_F(SpanBuilderTest, TenKeepAliveExchangesAreTenSpans) {
  const std::string request = "GET /ping HTTP/1.1\r\n\r\n";
  const std::string response = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
  Feed(script_.Accept(1, 7, 100));
  for (uint64_t i = 0; i < 10; ++i) {
    Feed(script_.Recv(1, 7, 1000 * i + 10, request));
    Feed(script_.Send(1, 7, 1000 * i + 20, response));
  }
  EXPECT_EQ(spans_.size(), 9u);  // the 10th ends on close
  Feed(script_.Close(1, 7, 20000));
  ASSERT_EQ(spans_.size(), 10u);
  std::set<uint64_t> ids;
  for (uint64_t i = 0; i < 10; ++i) {
    const v1::Span& span = spans_[i];
    ids.insert(span.span_id());
    EXPECT_EQ(span.request_offset(), i * request.size()) << i;
    EXPECT_EQ(span.request_bytes(), request.size());
    EXPECT_EQ(span.response_offset(), i * response.size());
    EXPECT_EQ(span.response_bytes(), response.size());
    EXPECT_EQ(span.start_ns(), static_cast<int64_t>(1000 * i + 10));
    EXPECT_EQ(span.end_ns(), static_cast<int64_t>(1000 * i + 20));
    EXPECT_EQ(span.name(), "GET /ping");
  }
  EXPECT_EQ(ids.size(), 10u);
}

TEST_F(SpanBuilderTest, ManySegmentsInManyReadsMakeOneSpan) {
  std::string request(700, 'q');
  std::string response(5000, 'r');
  Feed(script_.Connect(2, 5, 10));
  for (size_t i = 0; i < request.size(); i += 7) {
    Feed(script_.Send(2, 5, 100 + i, request.substr(i, 7)));
  }
  for (size_t i = 0; i < response.size(); i += 100) {
    Feed(script_.Recv(2, 5, 10000 + i, response.substr(i, 100)));
  }
  Feed(script_.Eof(2, 5, 99999));
  ASSERT_EQ(spans_.size(), 1u);
  EXPECT_EQ(spans_[0].request_bytes(), 700u);
  EXPECT_EQ(spans_[0].response_bytes(), 5000u);
  EXPECT_EQ(spans_[0].start_ns(), 100);
  EXPECT_EQ(spans_[0].end_ns(), 10000 + 4900);
  // Unknown protocol: named after the peer.
  EXPECT_EQ(spans_[0].name(), "10.0.0.2:8080");
  EXPECT_TRUE(spans_[0].attributes().empty());
}

TEST_F(SpanBuilderTest, AClientSpanIsTheChildOfTheServerSpanReadOnItsThread) {
  Feed(script_.Accept(1, 7, 100));
  Feed(script_.Recv(1, 7, 200, "GET /checkout HTTP/1.1\r\n\r\n"));
  // Thread 7 calls a backend while handling the request.
  Feed(script_.Connect(2, 7, 300, 0, "10.0.0.9", 6379));
  Feed(script_.Send(2, 7, 310, "*1\r\n$4\r\nPING\r\n"));
  Feed(script_.Recv(2, 7, 390, "+PONG\r\n"));
  Feed(script_.Close(2, 7, 400));
  // Another thread with no request of its own.
  Feed(script_.Connect(3, 8, 300));
  Feed(script_.Send(3, 8, 310, "x"));
  Feed(script_.Close(3, 8, 400));
  Feed(script_.Send(1, 7, 500, "HTTP/1.1 200 OK\r\n\r\n"));
  Feed(script_.Close(1, 7, 600));

  ASSERT_EQ(spans_.size(), 3u);
  const v1::Span& backend = spans_[0];
  const v1::Span& other = spans_[1];
  const v1::Span& server = spans_[2];
  EXPECT_EQ(server.kind(), v1::SPAN_KIND_SERVER);
  EXPECT_EQ(backend.parent_span_id(), server.span_id());
  EXPECT_EQ(backend.name(), "PING");  // a Redis command
  EXPECT_EQ(backend.attributes().at("db.system"), "redis");
  EXPECT_EQ(other.parent_span_id(), 0u);
  EXPECT_EQ(server.parent_span_id(), 0u);
}

TEST_F(SpanBuilderTest, AThreadStartedWhileHandlingARequestInheritsItsServerSpan) {
  Feed(script_.Accept(1, 7, 100));
  Feed(script_.Recv(1, 7, 200, "GET /checkout HTTP/1.1\r\n\r\n"));
  // Thread 7 starts thread 9 (kThreadStart: tid = new thread, fd = creator), which calls
  // a backend.
  EventRecord start = {};
  start.header = {kRecordMagic, static_cast<uint16_t>(RecordType::kEvent), sizeof(EventRecord)};
  start.kind = static_cast<uint8_t>(EventKind::kThreadStart);
  start.pid = 4242;
  start.tid = 9;
  start.fd = 7;
  Feed(start);
  Feed(script_.Connect(2, 9, 300, 0, "10.0.0.9", 6379));
  Feed(script_.Send(2, 9, 310, "*1\r\n$4\r\nPING\r\n"));
  Feed(script_.Recv(2, 9, 390, "+PONG\r\n"));
  Feed(script_.Close(2, 9, 400));
  Feed(script_.Send(1, 7, 500, "HTTP/1.1 200 OK\r\n\r\n"));
  Feed(script_.Close(1, 7, 600));

  ASSERT_EQ(spans_.size(), 2u);
  EXPECT_EQ(spans_[1].kind(), v1::SPAN_KIND_SERVER);
  EXPECT_EQ(spans_[0].parent_span_id(), spans_[1].span_id());
}

TEST_F(SpanBuilderTest, TheLatestRequestReadOnAThreadIsTheParent) {
  Feed(script_.Accept(1, 7, 100));
  Feed(script_.Accept(2, 7, 100));
  Feed(script_.Recv(1, 7, 200, "GET /a HTTP/1.1\r\n\r\n"));
  Feed(script_.Recv(2, 7, 210, "GET /b HTTP/1.1\r\n\r\n"));
  Feed(script_.Connect(3, 7, 300));
  Feed(script_.Send(3, 7, 310, "GET /backend HTTP/1.1\r\n\r\n"));
  builder_.OnProcessGone(kProcess);
  ASSERT_EQ(spans_.size(), 3u);
  uint64_t b_id = 0, client_parent = 1;
  for (const v1::Span& span : spans_) {
    if (span.name() == "GET /b") b_id = span.span_id();
    if (span.name() == "GET /backend") client_parent = span.parent_span_id();
  }
  EXPECT_EQ(client_parent, b_id);
}

TEST_F(SpanBuilderTest, TheConnectingThreadsContextIsUsedWhenTheSenderHasNone) {
  Feed(script_.Accept(1, 7, 100));
  Feed(script_.Recv(1, 7, 200, "GET /a HTTP/1.1\r\n\r\n"));
  Feed(script_.Connect(2, 7, 300));
  // A later callback on a thread that never read a request sends on the connection.
  Feed(script_.Send(2, 9, 400, "GET /upstream HTTP/1.1\r\n\r\n"));
  Feed(script_.Recv(2, 9, 500, "HTTP/1.1 200 OK\r\n\r\n"));
  Feed(script_.Close(2, 9, 600));
  Feed(script_.Close(1, 7, 700));
  ASSERT_EQ(spans_.size(), 2u);
  EXPECT_EQ(spans_[0].name(), "GET /upstream");
  EXPECT_EQ(spans_[0].tid(), 9u);
  EXPECT_EQ(spans_[0].parent_span_id(), spans_[1].span_id());
}

TEST_F(SpanBuilderTest, TheFirstRequestOnAConnectionBelongsToTheRequestThatOpenedIt) {
  // An event loop reads /a, connects upstream, reads /b in another callback, and only then
  // writes /a's upstream request; later it reuses the connection for /c.
  Feed(script_.Accept(1, 7, 100));
  Feed(script_.Accept(2, 7, 100));
  Feed(script_.Recv(1, 7, 200, "GET /a HTTP/1.1\r\n\r\n"));
  Feed(script_.Connect(3, 7, 210));
  Feed(script_.Recv(2, 7, 220, "GET /b HTTP/1.1\r\n\r\n"));
  Feed(script_.Send(3, 7, 230, "GET /upstream-a HTTP/1.1\r\n\r\n"));
  Feed(script_.Recv(3, 7, 240, "HTTP/1.1 200 OK\r\n\r\n"));
  Feed(script_.Accept(4, 7, 250));
  Feed(script_.Recv(4, 7, 260, "GET /c HTTP/1.1\r\n\r\n"));
  Feed(script_.Send(3, 7, 270, "GET /upstream-c HTTP/1.1\r\n\r\n"));
  builder_.OnProcessGone(kProcess);
  std::map<std::string, const v1::Span*> by_name;
  for (const v1::Span& span : spans_) by_name[span.name()] = &span;
  ASSERT_EQ(by_name.size(), 5u);
  EXPECT_EQ(by_name["GET /upstream-a"]->parent_span_id(), by_name["GET /a"]->span_id());
  EXPECT_EQ(by_name["GET /upstream-c"]->parent_span_id(), by_name["GET /c"]->span_id());
}

TEST_F(SpanBuilderTest, BytesThatAreNotUtf8NeverReachASpanString) {
  SpanBuilder builder("node-a",
                      [this](const SpanRecord& span) { spans_.push_back(Checked(span)); });
  HookScript script(99);
  builder.OnHello(1, script.Hello("caf\xE9", "bad\xFF"));
  builder.OnEvent(1, script.Accept(1, 7, 100), kT0);
  builder.OnData(1, script.Recv(1, 7, 200, "GET /\xC0\xAF\xFF HTTP/1.1\r\n\r\n"), kT0);
  builder.OnData(1, script.Send(1, 7, 300, "HTTP/1.1 200 OK\r\n\r\n"), kT0);
  builder.OnEvent(1, script.Close(1, 7, 400), kT0);
  ASSERT_EQ(spans_.size(), 1u);
  // A message with these strings parses: protobuf checks UTF-8 when it parses.
  v1::Span parsed;
  ASSERT_TRUE(parsed.ParseFromString(spans_[0].SerializeAsString()));
  EXPECT_EQ(parsed.service(), "caf\xEF\xBF\xBD");
  EXPECT_EQ(parsed.process(), "bad\xEF\xBF\xBD");
}

TEST_F(SpanBuilderTest, ProcessDisconnectFinishesOpenSpans) {
  Feed(script_.Accept(1, 7, 100));
  Feed(script_.Recv(1, 7, 200, "GET /slow HTTP/1.1\r\n\r\n"));
  Feed(script_.Recv(1, 7, 250, "more"));
  Feed(script_.Connect(2, 8, 300));
  Feed(script_.Send(2, 8, 310, "ping"));
  Feed(script_.Recv(2, 8, 320, "pong"));
  EXPECT_EQ(builder_.open_spans(), 2u);
  builder_.OnProcessGone(kProcess);
  ASSERT_EQ(spans_.size(), 2u);
  EXPECT_EQ(builder_.open_spans(), 0u);
  for (const v1::Span& span : spans_) {
    if (span.kind() == v1::SPAN_KIND_SERVER) {
      EXPECT_EQ(span.end_ns(), 250);  // no response: the last request bytes
      EXPECT_EQ(span.response_bytes(), 0u);
      EXPECT_EQ(span.request_bytes(), 26u);
    } else {
      EXPECT_EQ(span.end_ns(), 320);
      EXPECT_EQ(span.response_bytes(), 4u);
    }
  }
  // The process is forgotten: its events are ignored from now on.
  Feed(script_.Recv(2, 8, 400, "late"));
  builder_.FinishAll();
  EXPECT_EQ(spans_.size(), 2u);
}

TEST_F(SpanBuilderTest, ASpanIdleInItsResponsePhaseEndsAfterTheTimeout) {
  Feed(script_.Connect(1, 5, 100), kT0);
  Feed(script_.Send(1, 5, 200, "GET / HTTP/1.1\r\n\r\n"), kT0);
  Feed(script_.Recv(1, 5, 300, "HTTP/1.1 200 OK\r\n\r\n"), kT0 + absl::Milliseconds(10));
  builder_.ExpireIdle(kT0 + absl::Seconds(1));
  EXPECT_TRUE(spans_.empty());
  builder_.ExpireIdle(kT0 + absl::Milliseconds(2010));
  ASSERT_EQ(spans_.size(), 1u);
  EXPECT_EQ(spans_[0].end_ns(), 300);
  // The connection lives on: the next request starts a new span.
  Feed(script_.Send(1, 5, 5000, "GET /next HTTP/1.1\r\n\r\n"), kT0 + absl::Seconds(5));
  Feed(script_.Close(1, 5, 6000), kT0 + absl::Seconds(6));
  ASSERT_EQ(spans_.size(), 2u);
  EXPECT_EQ(spans_[1].name(), "GET /next");
  EXPECT_EQ(spans_[1].request_offset(), 18u);
}

TEST_F(SpanBuilderTest, ASpanWaitingForItsResponseIsNotIdle) {
  Feed(script_.Connect(1, 5, 100), kT0);
  Feed(script_.Send(1, 5, 200, "GET / HTTP/1.1\r\n\r\n"), kT0);
  builder_.ExpireIdle(kT0 + absl::Seconds(60));
  EXPECT_TRUE(spans_.empty());
}

TEST_F(SpanBuilderTest, TheIdleTimeoutIsAParameter) {
  std::vector<v1::Span> out;
  SpanBuilder builder("n", [&](const SpanRecord& s) { out.push_back(Checked(s)); },
                      absl::Milliseconds(50));
  builder.OnHello(1, script_.Hello());
  builder.OnEvent(1, script_.Connect(1, 5, 100), kT0);
  builder.OnData(1, script_.Send(1, 5, 200, "a"), kT0);
  builder.OnData(1, script_.Recv(1, 5, 300, "b"), kT0);
  builder.ExpireIdle(kT0 + absl::Milliseconds(49));
  EXPECT_TRUE(out.empty());
  builder.ExpireIdle(kT0 + absl::Milliseconds(50));
  EXPECT_EQ(out.size(), 1u);
}

TEST_F(SpanBuilderTest, A5xxResponseIsAnError) {
  Feed(script_.Accept(1, 7, 100));
  Feed(script_.Recv(1, 7, 200, "GET /boom HTTP/1.1\r\n\r\n"));
  Feed(script_.Send(1, 7, 300, "HTTP/1.1 503 Service Unavailable\r\n\r\n"));
  Feed(script_.Recv(1, 7, 400, "GET /missing HTTP/1.1\r\n\r\n"));
  Feed(script_.Send(1, 7, 500, "HTTP/1.1 404 Not Found\r\n\r\n"));
  Feed(script_.Close(1, 7, 600));
  ASSERT_EQ(spans_.size(), 2u);
  EXPECT_EQ(spans_[0].status(), v1::SPAN_STATUS_ERROR);
  EXPECT_EQ(spans_[0].attributes().at("http.response.status_code"), "503");
  EXPECT_EQ(spans_[1].status(), v1::SPAN_STATUS_OK);
  EXPECT_EQ(spans_[1].attributes().at("http.response.status_code"), "404");
  EXPECT_EQ(spans_[1].name(), "GET /missing");
}

TEST_F(SpanBuilderTest, AnUnknownServerProtocolIsNamedAfterTheLocalEndpoint) {
  Feed(script_.Accept(1, 7, 100));
  Feed(script_.Recv(1, 7, 200, std::string("\x16\x03\x01\x00\x05hello", 10)));
  Feed(script_.Send(1, 7, 300, "\x01\x02"));
  Feed(script_.Close(1, 7, 400));
  ASSERT_EQ(spans_.size(), 1u);
  EXPECT_EQ(spans_[0].name(), "10.0.0.2:8080");
  EXPECT_EQ(spans_[0].status(), v1::SPAN_STATUS_OK);
}

TEST_F(SpanBuilderTest, ARefusedConnectIsAFailedClientSpan) {
  Feed(script_.Accept(1, 7, 100));
  Feed(script_.Recv(1, 7, 200, "GET / HTTP/1.1\r\n\r\n"));
  Feed(script_.Connect(2, 7, 300, ECONNREFUSED, "10.0.0.5", 5432));
  ASSERT_EQ(spans_.size(), 1u);
  const v1::Span& span = spans_[0];
  EXPECT_EQ(span.kind(), v1::SPAN_KIND_CLIENT);
  EXPECT_EQ(span.status(), v1::SPAN_STATUS_ERROR);
  EXPECT_EQ(span.status_message(), std::strerror(ECONNREFUSED));
  EXPECT_EQ(span.name(), "10.0.0.5:5432");
  EXPECT_EQ(span.start_ns(), 300);
  EXPECT_EQ(span.end_ns(), 300);
  EXPECT_NE(span.parent_span_id(), 0u);
  // The failed connection leaves nothing behind.
  Feed(script_.Close(2, 7, 310));
  EXPECT_EQ(spans_.size(), 1u);
}

TEST_F(SpanBuilderTest, AnInProgressConnectIsNotAFailure) {
  Feed(script_.Connect(2, 7, 300, EINPROGRESS));
  Feed(script_.Send(2, 7, 400, "hi"));
  Feed(script_.Recv(2, 7, 500, "yo"));
  Feed(script_.Close(2, 7, 600));
  ASSERT_EQ(spans_.size(), 1u);
  EXPECT_EQ(spans_[0].status(), v1::SPAN_STATUS_OK);
  EXPECT_EQ(spans_[0].start_ns(), 400);
}

TEST_F(SpanBuilderTest, ANonBlockingConnectThatFailsAtTheFirstSendIsAFailedSpan) {
  Feed(script_.Connect(2, 7, 300, EINPROGRESS));
  Feed(script_.Failed(EventKind::kSend, 2, 7, 400, ECONNREFUSED));
  Feed(script_.Failed(EventKind::kSend, 2, 7, 410, EPIPE));  // only reported once
  Feed(script_.Close(2, 7, 500));
  ASSERT_EQ(spans_.size(), 1u);
  EXPECT_EQ(spans_[0].status(), v1::SPAN_STATUS_ERROR);
  EXPECT_EQ(spans_[0].status_message(), std::strerror(ECONNREFUSED));
}

TEST_F(SpanBuilderTest, WouldBlockIsNotAnError) {
  Feed(script_.Connect(2, 7, 300));
  Feed(script_.Send(2, 7, 400, "hi"));
  Feed(script_.Failed(EventKind::kRecv, 2, 7, 410, EAGAIN));
  Feed(script_.Recv(2, 7, 500, "yo"));
  Feed(script_.Close(2, 7, 600));
  ASSERT_EQ(spans_.size(), 1u);
  EXPECT_EQ(spans_[0].status(), v1::SPAN_STATUS_OK);
  EXPECT_EQ(spans_[0].response_bytes(), 2u);
}

TEST_F(SpanBuilderTest, AResetBeforeTheResponseIsAnError) {
  Feed(script_.Connect(2, 7, 300));
  Feed(script_.Send(2, 7, 400, "GET / HTTP/1.1\r\n\r\n"));
  Feed(script_.Failed(EventKind::kRecv, 2, 7, 450, ECONNRESET));
  ASSERT_EQ(spans_.size(), 1u);
  EXPECT_EQ(spans_[0].status(), v1::SPAN_STATUS_ERROR);
  EXPECT_EQ(spans_[0].status_message(), std::strerror(ECONNRESET));
  EXPECT_EQ(spans_[0].end_ns(), 400);
}

TEST_F(SpanBuilderTest, EndOfStreamFinishesTheSpan) {
  Feed(script_.Connect(2, 7, 300));
  Feed(script_.Send(2, 7, 400, "a"));
  Feed(script_.Recv(2, 7, 500, "b"));
  Feed(script_.Eof(2, 7, 600));
  EXPECT_EQ(spans_.size(), 1u);
}

TEST_F(SpanBuilderTest, AReannouncedConnectionWhoseOpenWasLostIsAdopted) {
  HookScript other;
  other.Accept(9, 7, 100);  // never fed: the hook dropped it, then re-announced it
  Feed(other.Reannounce(9, 7, 150));
  Feed(other.Recv(9, 7, 200, "GET /late HTTP/1.1\r\n\r\n"));
  Feed(other.Send(9, 7, 300, "HTTP/1.1 200 OK\r\n\r\n"));
  Feed(other.Close(9, 7, 400));
  ASSERT_EQ(spans_.size(), 1u);
  EXPECT_EQ(spans_[0].kind(), v1::SPAN_KIND_SERVER);
  EXPECT_EQ(spans_[0].name(), "GET /late");
  EXPECT_EQ(spans_[0].request_offset(), 0u);
  EXPECT_EQ(spans_[0].local().port(), 8080u);
  EXPECT_EQ(spans_[0].peer().port(), 40009u);
  EXPECT_EQ(builder_.events_without_connection(), 0u);
}

// The hook re-announces when it cannot know whether the agent has the open record: a
// re-announcement of a known connection changes nothing, not even its open span.
TEST_F(SpanBuilderTest, AReannouncementOfAKnownConnectionKeepsItsOpenSpan) {
  Feed(script_.Connect(2, 5, 100, 0, "10.0.0.9", 6379));
  Feed(script_.Send(2, 5, 200, "*1\r\n$4\r\nPING\r\n"));
  Feed(script_.Reannounce(2, 5, 250));
  Feed(script_.Recv(2, 5, 300, "+PONG\r\n"));
  Feed(script_.Close(2, 5, 400));
  ASSERT_EQ(spans_.size(), 1u);
  EXPECT_EQ(spans_[0].start_ns(), 200);
  EXPECT_EQ(spans_[0].end_ns(), 300);
  EXPECT_EQ(spans_[0].request_bytes(), 14u);
  EXPECT_EQ(spans_[0].response_bytes(), 7u);
}

// A connection re-announced after bytes moved is not at its first exchange: a failure
// then is no failed connect.
TEST_F(SpanBuilderTest, AReannouncedConnectionThatHadExchangesFailsNoConnect) {
  HookScript other;
  other.Connect(3, 5, 100);
  other.Send(3, 5, 200, "a");
  other.Recv(3, 5, 300, "b");
  Feed(other.Reannounce(3, 5, 350));
  Feed(other.Failed(EventKind::kSend, 3, 5, 400, EPIPE));
  builder_.FinishAll();
  EXPECT_TRUE(spans_.empty());
}

TEST_F(SpanBuilderTest, DataOfAnUnknownConnectionIsCountedAndIgnored) {
  HookScript other;
  other.Accept(9, 7, 100);  // never fed, never re-announced
  Feed(other.Recv(9, 7, 200, "GET / HTTP/1.1\r\n\r\n"));
  Feed(other.Send(9, 7, 300, "HTTP/1.1 200 OK\r\n\r\n"));
  Feed(other.Eof(9, 7, 350));
  Feed(other.Close(9, 7, 400));
  builder_.FinishAll();
  EXPECT_TRUE(spans_.empty());
  EXPECT_EQ(builder_.events_without_connection(), 3u);
}

// A process configured to capture less than the fingerprint covers sends the fingerprint;
// otherwise the agent computes it from the capture. Either way the span has it.
TEST_F(SpanBuilderTest, TheFingerprintComesFromTheHookWhenTheCaptureIsShort) {
  const std::string request = "GET /a-long-path HTTP/1.1\r\n\r\n";
  Feed(script_.Accept(1, 7, 100));
  DataRecord short_capture = script_.Recv(1, 7, 200, request);
  short_capture.capture_len = 4;
  short_capture.hash = Fingerprint64(request.data(), request.size());
  short_capture.header.size = static_cast<uint16_t>(DataRecordWireSize(short_capture.flags, 4));
  Feed(short_capture);
  Feed(script_.Send(1, 7, 300, "HTTP/1.1 200 OK\r\n\r\n"));
  Feed(script_.Close(1, 7, 400));
  ASSERT_EQ(spans_.size(), 1u);
  EXPECT_EQ(spans_[0].request_hash(), Fingerprint64(request.data(), request.size()));
  EXPECT_EQ(spans_[0].response_hash(), Fingerprint64("HTTP/1.1 200 OK\r\n\r\n", 19));
  EXPECT_EQ(spans_[0].name(), "10.0.0.2:8080");  // 4 bytes name no request line
}

// Records carry CLOCK_MONOTONIC; the hello's clock pair turns them into wall time.
TEST_F(SpanBuilderTest, TimesAreMonotonicPlusTheHellosOffset) {
  const uint64_t offset = uint64_t{1700000000} * 1000000000;
  HookScript other(5151, offset);
  builder_.OnHello(78, other.Hello());
  const uint64_t wall = offset + 5000;
  builder_.OnEvent(78, other.Accept(1, 7, wall), kT0);
  builder_.OnData(78, other.Recv(1, 7, wall + 100, "GET /t HTTP/1.1\r\n\r\n"), kT0);
  builder_.OnData(78, other.Send(1, 7, wall + 900, "HTTP/1.1 200 OK\r\n\r\n"), kT0);
  builder_.OnEvent(78, other.Close(1, 7, wall + 1000), kT0);
  ASSERT_EQ(spans_.size(), 1u);
  EXPECT_EQ(spans_[0].start_ns(), static_cast<int64_t>(wall + 100));
  EXPECT_EQ(spans_[0].end_ns(), static_cast<int64_t>(wall + 900));
}

TEST_F(SpanBuilderTest, ResponseBytesBeforeAnyRequestAreIgnored) {
  // A server that greets first (SMTP, MySQL): the greeting is no span.
  Feed(script_.Accept(1, 7, 100));
  Feed(script_.Send(1, 7, 150, "220 hello\r\n"));
  Feed(script_.Recv(1, 7, 200, "HELO x\r\n"));
  Feed(script_.Send(1, 7, 300, "250 ok\r\n"));
  Feed(script_.Close(1, 7, 400));
  ASSERT_EQ(spans_.size(), 1u);
  EXPECT_EQ(spans_[0].start_ns(), 200);
  EXPECT_EQ(spans_[0].response_offset(), 11u);
  EXPECT_EQ(spans_[0].response_bytes(), 8u);
}

// Names are the process's when its span started: a second hello on the same hook
// connection (new names) does not rename the spans already open, and names the next ones.
TEST_F(SpanBuilderTest, AHelloAgainRenamesOnlyTheSpansThatStartAfterIt) {
  Feed(script_.Accept(1, 7, 100));
  Feed(script_.Recv(1, 7, 200, "GET /a HTTP/1.1\r\n\r\n"));
  builder_.OnHello(kProcess, script_.Hello("cart", "cartd"));
  Feed(script_.Send(1, 7, 300, "HTTP/1.1 200 OK\r\n\r\n"));
  Feed(script_.Recv(1, 7, 400, "GET /b HTTP/1.1\r\n\r\n"));
  Feed(script_.Close(1, 7, 500));
  ASSERT_EQ(spans_.size(), 2u);
  EXPECT_EQ(spans_[0].service(), "shop");
  EXPECT_EQ(spans_[0].process(), "shopd");
  EXPECT_EQ(spans_[1].service(), "cart");
  EXPECT_EQ(spans_[1].process(), "cartd");
  // The second span carried its connection's bytes encoded again with the new names (the
  // sink checks that they are its fields').
  EXPECT_EQ(spans_with_connection_wire_, 1u);
}

TEST_F(SpanBuilderTest, SpansCarryTheirConnectionsWireBytes) {
  Feed(script_.Accept(1, 7, 100));
  Feed(script_.Recv(1, 7, 200, "GET /a HTTP/1.1\r\n\r\n"));
  Feed(script_.Send(1, 7, 300, "HTTP/1.1 200 OK\r\n\r\n"));
  Feed(script_.Connect(2, 8, 310));
  Feed(script_.Send(2, 8, 320, "*1\r\n$4\r\nPING\r\n"));
  Feed(script_.Recv(2, 8, 330, "+PONG\r\n"));
  Feed(script_.Close(2, 8, 340));
  Feed(script_.Close(1, 7, 500));
  ASSERT_EQ(spans_.size(), 2u);
  EXPECT_EQ(spans_with_connection_wire_, 2u);
}

TEST_F(SpanBuilderTest, ProcessesAreKeptApart) {
  HookScript other(5151);
  builder_.OnHello(78, other.Hello("cart", "cartd"));
  // The same conn_id in two processes.
  Feed(script_.Accept(1, 7, 100));
  builder_.OnEvent(78, other.Connect(1, 7, 100), kT0);
  Feed(script_.Recv(1, 7, 200, "GET /x HTTP/1.1\r\n\r\n"));
  builder_.OnData(78, other.Send(1, 7, 210, "GET /y HTTP/1.1\r\n\r\n"), kT0);
  builder_.OnProcessGone(78);
  ASSERT_EQ(spans_.size(), 1u);
  EXPECT_EQ(spans_[0].service(), "cart");
  EXPECT_EQ(spans_[0].pid(), 5151u);
  EXPECT_EQ(spans_[0].parent_span_id(), 0u);  // no causality across processes
  EXPECT_EQ(builder_.open_spans(), 1u);
}

// A server thread that forks (or execs) while handling a request: the child's main thread
// (tid = its pid) continues the forking thread, so the child's calls are the request's.
TEST_F(SpanBuilderTest, AForkedChildsCallsBelongToTheRequestItsParentThreadHandled) {
  Feed(script_.Accept(1, 7, 100));
  Feed(script_.Recv(1, 7, 200, "GET /report HTTP/1.1\r\n\r\n"));
  HookScript child(5001);
  HelloRecord hello = child.Hello("shop", "shopd");
  hello.cause_pid = 4242;
  hello.cause_tid = 7;
  builder_.OnHello(78, hello);
  FeedTo(78, child.Connect(1, 5001, 300, 0, "10.0.0.9", 6379));
  FeedTo(78, child.Send(1, 5001, 310, "*1\r\n$4\r\nPING\r\n"));
  FeedTo(78, child.Close(1, 5001, 400));
  // A second child forked by a thread that handled nothing starts with no context.
  HookScript idle(5002);
  HelloRecord idle_hello = idle.Hello("shop", "shopd");
  idle_hello.cause_pid = 4242;
  idle_hello.cause_tid = 8;
  builder_.OnHello(79, idle_hello);
  FeedTo(79, idle.Connect(1, 5002, 300));
  FeedTo(79, idle.Send(1, 5002, 310, "x"));
  FeedTo(79, idle.Close(1, 5002, 400));
  Feed(script_.Send(1, 7, 500, "HTTP/1.1 200 OK\r\n\r\n"));
  Feed(script_.Close(1, 7, 600));

  ASSERT_EQ(spans_.size(), 3u);
  EXPECT_EQ(spans_[0].pid(), 5001u);
  EXPECT_EQ(spans_[0].parent_span_id(), spans_[2].span_id());
  EXPECT_EQ(spans_[1].pid(), 5002u);
  EXPECT_EQ(spans_[1].parent_span_id(), 0u);
  EXPECT_EQ(spans_[2].kind(), v1::SPAN_KIND_SERVER);
}

// exec() replaces the process image: the old hook connection ends (maybe before the new
// image says hello), and the new image's hello names the exec'ing thread of the same pid.
TEST_F(SpanBuilderTest, AnExecdProgramContinuesTheThreadThatExecdItEvenAfterItsImageIsGone) {
  HookScript before(6001);
  builder_.OnHello(80, before.Hello("cgi", "sh"));
  FeedTo(80, before.Accept(1, 6001, 100));
  FeedTo(80, before.Recv(1, 6001, 200, "GET /cgi HTTP/1.1\r\n\r\n"));
  builder_.OnProcessGone(80);  // exec: the old image's hook connection closed first
  ASSERT_EQ(spans_.size(), 1u);
  const uint64_t server_span = spans_[0].span_id();
  EXPECT_EQ(builder_.remembered_processes(), 1u);

  HookScript after(6001);
  HelloRecord hello = after.Hello("cgi", "report");
  hello.cause_pid = 6001;
  hello.cause_tid = 6001;
  builder_.OnHello(81, hello);
  FeedTo(81, after.Connect(1, 6001, 300, 0, "10.0.0.9", 5432));
  FeedTo(81, after.Send(1, 6001, 310, "Q"));
  FeedTo(81, after.Close(1, 6001, 400));
  ASSERT_EQ(spans_.size(), 2u);
  EXPECT_EQ(spans_[1].parent_span_id(), server_span);

  // Remembered for a while, then forgotten.
  builder_.ExpireIdle(kT0);
  builder_.ExpireIdle(kT0 + SpanBuilder::kEndedProcessMemory - absl::Seconds(1));
  EXPECT_EQ(builder_.remembered_processes(), 1u);
  builder_.ExpireIdle(kT0 + SpanBuilder::kEndedProcessMemory);
  EXPECT_EQ(builder_.remembered_processes(), 0u);
}

TEST_F(SpanBuilderTest, AUnixDomainConnectionIsNamedAfterItsSocket) {
  EventRecord accept = script_.Accept(1, 7, 100);
  accept.family = kFamilyUnix;
  std::memset(accept.local_addr, 0, 16);
  std::memset(accept.peer_addr, 0, 16);
  accept.local_port = accept.peer_port = 0;
  const std::string path = "/run/app/api.sock";
  std::memcpy(accept.capture, path.data(), path.size());
  accept.capture_len = static_cast<uint8_t>(path.size());
  Feed(accept);
  Feed(script_.Recv(1, 7, 200, "hello?\n"));
  Feed(script_.Send(1, 7, 300, "hi\n"));
  Feed(script_.Close(1, 7, 400));
  ASSERT_EQ(spans_.size(), 1u);
  EXPECT_EQ(spans_[0].name(), "unix:/run/app/api.sock");
  EXPECT_EQ(spans_[0].attributes().at("net.unix.path"), path);
  EXPECT_TRUE(spans_[0].local().ip().empty());
  EXPECT_EQ(spans_[0].local().port(), 0u);
}

// A server that reads the request line a byte at a time (python's CGI handler does): the
// hook sends each call's share of the message's head, and the name comes from all of them.
TEST_F(SpanBuilderTest, ARequestReadAByteAtATimeIsNamedFromItsWholeHead) {
  const std::string request = "GET /cgi-bin/report.sh?x=1 HTTP/1.1\r\nHost: a\r\n\r\n";
  const std::string response = "HTTP/1.1 503 Service Unavailable\r\n\r\n";
  Feed(script_.Accept(1, 7, 100));
  for (size_t i = 0; i < request.size(); ++i) {
    Feed(script_.Recv(1, 7, 200 + i, request.substr(i, 1)));
  }
  for (size_t i = 0; i < response.size(); i += 5) {
    Feed(script_.Send(1, 7, 400 + i, response.substr(i, 5)));
  }
  Feed(script_.Close(1, 7, 600));
  ASSERT_EQ(spans_.size(), 1u);
  EXPECT_EQ(spans_[0].name(), "GET /cgi-bin/report.sh");
  EXPECT_EQ(spans_[0].attributes().at("http.response.status_code"), "503");
  EXPECT_EQ(spans_[0].status(), v1::SPAN_STATUS_ERROR);
  EXPECT_EQ(spans_[0].request_bytes(), request.size());
}

// A record lost in the middle of a head leaves the head as it was before the gap: never
// bytes spliced from two places.
TEST_F(SpanBuilderTest, AGapInAHeadStopsItGrowing) {
  Feed(script_.Accept(1, 7, 100));
  Feed(script_.Recv(1, 7, 200, "GE"));
  script_.Recv(1, 7, 210, "T /lost");  // never fed: dropped in the hook's full ring
  Feed(script_.Recv(1, 7, 220, " HTTP/1.1\r\n\r\n"));
  Feed(script_.Send(1, 7, 300, "HTTP/1.1 200 OK\r\n\r\n"));
  Feed(script_.Close(1, 7, 400));
  ASSERT_EQ(spans_.size(), 1u);
  EXPECT_EQ(spans_[0].name(), "10.0.0.2:8080");  // "GE" is no request line
}

// A non-blocking connect in progress, then its failure reported on the same connection
// (the program polled connect() again or read SO_ERROR): one failed span, from the call to
// the failure, belonging to the request that was being handled when it connected.
TEST_F(SpanBuilderTest, AnInProgressConnectThatFailsLaterIsOneFailedSpan) {
  Feed(script_.Accept(1, 7, 100));
  Feed(script_.Recv(1, 7, 200, "GET / HTTP/1.1\r\n\r\n"));
  Feed(script_.Connect(2, 7, 300, EINPROGRESS, "10.0.0.5", 5432));
  EventRecord failed = script_.Connect(2, 9, 800, ECONNREFUSED, "10.0.0.5", 5432);
  Feed(failed);
  ASSERT_EQ(spans_.size(), 1u);
  const v1::Span& span = spans_[0];
  EXPECT_EQ(span.status(), v1::SPAN_STATUS_ERROR);
  EXPECT_EQ(span.status_message(), std::strerror(ECONNREFUSED));
  EXPECT_EQ(span.start_ns(), 300);
  EXPECT_EQ(span.end_ns(), 800);
  EXPECT_EQ(span.tid(), 7u);
  EXPECT_NE(span.parent_span_id(), 0u);
  Feed(script_.Close(2, 9, 810));  // nothing left behind
  EXPECT_EQ(spans_.size(), 1u);
  EXPECT_EQ(builder_.open_spans(), 1u);  // the server's request, still being handled
}

// Protocol-aware names and errors beyond HTTP (agent/protocol): Redis, PostgreSQL.
TEST_F(SpanBuilderTest, RedisAndPostgresqlExchangesAreNamedAndTheirErrorsMarked) {
  Feed(script_.Connect(2, 7, 100, 0, "10.0.0.9", 6379));
  Feed(script_.Send(2, 7, 110, "*2\r\n$4\r\nINCR\r\n$5\r\nhello\r\n"));
  Feed(script_.Recv(2, 7, 120, "-WRONGTYPE Operation against a key\r\n"));
  Feed(script_.Send(2, 7, 130, "*2\r\n$3\r\nGET\r\n$5\r\nhello\r\n"));
  Feed(script_.Recv(2, 7, 140, "$5\r\nworld\r\n"));
  Feed(script_.Close(2, 7, 150));
  ASSERT_EQ(spans_.size(), 2u);
  EXPECT_EQ(spans_[0].name(), "INCR");
  EXPECT_EQ(spans_[0].status(), v1::SPAN_STATUS_ERROR);
  EXPECT_NE(spans_[0].status_message().find("WRONGTYPE"), std::string::npos);
  EXPECT_EQ(spans_[1].name(), "GET");
  EXPECT_EQ(spans_[1].status(), v1::SPAN_STATUS_OK);

  std::string query = "SELECT * FROM orders WHERE id = 1";
  std::string q = "Q";
  const uint32_t len = htonl(static_cast<uint32_t>(4 + query.size() + 1));
  q.append(reinterpret_cast<const char*>(&len), 4);
  q += query;
  q.push_back('\0');
  const std::string error = std::string("E\0\0\0\x2a", 5) + "SERROR" + std::string(1, '\0') +
                            "C42P01" + std::string(1, '\0') + "Mrelation missing" +
                            std::string(2, '\0');
  Feed(script_.Connect(3, 7, 200, 0, "10.0.0.8", 5432));
  Feed(script_.Send(3, 7, 210, q));
  Feed(script_.Recv(3, 7, 220, error));
  Feed(script_.Close(3, 7, 230));
  ASSERT_EQ(spans_.size(), 3u);
  EXPECT_EQ(spans_[2].name(), "SELECT orders");
  EXPECT_EQ(spans_[2].attributes().at("db.system"), "postgresql");
  EXPECT_EQ(spans_[2].status(), v1::SPAN_STATUS_ERROR);
}

// HTTP and Redis answer every request: a request whose connection closed unanswered is an
// error (a timeout, or a server that crashed).
TEST_F(SpanBuilderTest, AnHttpRequestThatGotNoResponseIsAnError) {
  Feed(script_.Connect(2, 7, 100));
  Feed(script_.Send(2, 7, 110, "GET /slow HTTP/1.1\r\n\r\n"));
  Feed(script_.Close(2, 7, 5000));
  ASSERT_EQ(spans_.size(), 1u);
  EXPECT_EQ(spans_[0].name(), "GET /slow");
  EXPECT_EQ(spans_[0].status(), v1::SPAN_STATUS_ERROR);
  EXPECT_EQ(spans_[0].status_message(), "no response");
}

// A DNS query as a stub resolver sends it: id, recursion desired, one question.
std::string DnsQuery(uint16_t id, const std::vector<std::string>& labels, uint16_t type) {
  std::string q;
  q.push_back(static_cast<char>(id >> 8));
  q.push_back(static_cast<char>(id & 0xff));
  q += std::string("\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00", 10);
  for (const std::string& label : labels) {
    q.push_back(static_cast<char>(label.size()));
    q += label;
  }
  q.push_back('\0');
  q.push_back(static_cast<char>(type >> 8));
  q.push_back(static_cast<char>(type & 0xff));
  q += std::string("\x00\x01", 2);
  return q;
}

// Its answer with `rcode` and no records.
std::string DnsAnswer(std::string query, int rcode) {
  query[2] = static_cast<char>(0x81);
  query[3] = static_cast<char>(0x80 | rcode);
  return query;
}

// A resolver sends A and AAAA at once on one UDP socket; the answers come back in another
// order. Each query is paired with its answer by DNS id; an unanswered one times out.
TEST_F(SpanBuilderTest, DnsQueriesOnOneUdpSocketArePairedWithTheirAnswersById) {
  Feed(script_.Accept(1, 7, 100));
  Feed(script_.Recv(1, 7, 200, "GET /lookup HTTP/1.1\r\n\r\n"));
  const std::string a = DnsQuery(0x1111, {"shop", "example"}, 1);
  const std::string aaaa = DnsQuery(0x2222, {"shop", "example"}, 28);
  const std::string lost = DnsQuery(0x3333, {"cart", "example"}, 1);
  Feed(script_.UdpConnect(2, 7, 300));
  Feed(script_.Datagram(EventKind::kSend, 2, 7, 310, a));
  Feed(script_.Datagram(EventKind::kSend, 2, 7, 311, aaaa));
  Feed(script_.Datagram(EventKind::kRecv, 2, 7, 350, DnsAnswer(aaaa, 0)));
  Feed(script_.Datagram(EventKind::kRecv, 2, 7, 360, DnsAnswer(a, 3)));  // NXDOMAIN
  Feed(script_.Datagram(EventKind::kSend, 2, 7, 400, lost), kT0);
  ASSERT_EQ(spans_.size(), 2u);
  EXPECT_EQ(spans_[0].name(), "DNS AAAA shop.example");
  EXPECT_EQ(spans_[0].start_ns(), 311);
  EXPECT_EQ(spans_[0].end_ns(), 350);
  EXPECT_EQ(spans_[0].status(), v1::SPAN_STATUS_OK);
  EXPECT_EQ(spans_[1].name(), "DNS A shop.example");
  EXPECT_EQ(spans_[1].start_ns(), 310);
  EXPECT_EQ(spans_[1].end_ns(), 360);
  EXPECT_EQ(spans_[1].attributes().at("dns.rcode"), "NXDOMAIN");
  for (const v1::Span& span : spans_) EXPECT_NE(span.parent_span_id(), 0u);  // the request's
  EXPECT_EQ(builder_.open_spans(), 2u);  // the unanswered query, and the HTTP request
  builder_.ExpireIdle(kT0 + absl::Seconds(3));
  ASSERT_EQ(spans_.size(), 3u);
  EXPECT_EQ(spans_[2].name(), "DNS A cart.example");
  EXPECT_EQ(spans_[2].status(), v1::SPAN_STATUS_ERROR);
  EXPECT_EQ(spans_[2].status_message(), "no response");
}

// ---------------------------------------------------------------------------------------
// In-band mode

constexpr uint64_t kInbandTrace = 0x00ab'cdef'0123'4567;
constexpr uint64_t kInbandSpan = 0xfeed'0000'0000'0001;

TEST_F(SpanBuilderTest, InbandSentGivesTheClientSpanTheFramedSpanId) {
  Feed(script_.Connect(1, 5, 100));
  Feed(script_.Inband(InbandEvent::kSent, 1, 5, kInbandTrace, kInbandSpan));
  Feed(script_.Send(1, 5, 200, "GET /stock HTTP/1.1\r\n\r\n"));
  Feed(script_.Recv(1, 5, 300, "HTTP/1.1 200 OK\r\n\r\n"));
  Feed(script_.Close(1, 5, 400));

  ASSERT_EQ(spans_.size(), 1u);
  EXPECT_EQ(spans_[0].kind(), v1::SPAN_KIND_CLIENT);
  EXPECT_EQ(spans_[0].span_id(), kInbandSpan);
  EXPECT_EQ(spans_[0].attributes().at("inband.trace_id"), "00abcdef01234567");
  EXPECT_EQ(spans_[0].name(), "GET /stock");  // described as usual
}

TEST_F(SpanBuilderTest, InbandReceivedMakesTheFramingClientSpanTheServerSpansParent) {
  Feed(script_.Accept(1, 7, 100));
  Feed(script_.Inband(InbandEvent::kReceived, 1, 7, kInbandTrace, kInbandSpan));
  Feed(script_.Recv(1, 7, 200, "GET /stock HTTP/1.1\r\n\r\n"));
  Feed(script_.Send(1, 7, 300, "HTTP/1.1 200 OK\r\n\r\n"));
  Feed(script_.Close(1, 7, 400));

  ASSERT_EQ(spans_.size(), 1u);
  EXPECT_EQ(spans_[0].kind(), v1::SPAN_KIND_SERVER);
  EXPECT_EQ(spans_[0].parent_span_id(), kInbandSpan);
  EXPECT_NE(spans_[0].span_id(), kInbandSpan);
  EXPECT_EQ(spans_[0].attributes().at("inband.trace_id"), "00abcdef01234567");
}

// Records at offsets where no span starts (inside a request, or for the other role) are
// ignored: the spans are exactly as without them, and none stays waiting once a later
// span has started.
TEST_F(SpanBuilderTest, AnInbandRecordAtNoSpanStartChangesNothing) {
  const std::string request = "GET /a HTTP/1.1\r\n\r\n";
  Feed(script_.Accept(1, 7, 100));
  InbandRecord inside = script_.Inband(InbandEvent::kReceived, 1, 7, kInbandTrace, 11);
  inside.offset = 5;
  Feed(inside);
  // kSent belongs to a client connection.
  Feed(script_.Inband(InbandEvent::kSent, 1, 7, kInbandTrace, 12));
  Feed(script_.Recv(1, 7, 200, request));
  Feed(script_.Send(1, 7, 300, "HTTP/1.1 200 OK\r\n\r\n"));
  Feed(script_.Recv(1, 7, 400, request));  // the next span starts past offset 5
  Feed(script_.Close(1, 7, 500));

  ASSERT_EQ(spans_.size(), 2u);
  for (const v1::Span& span : spans_) {
    EXPECT_EQ(span.parent_span_id(), 0u);
    EXPECT_NE(span.span_id(), 11u);
    EXPECT_NE(span.span_id(), 12u);
    EXPECT_EQ(span.attributes().count("inband.trace_id"), 0u);
  }
  EXPECT_EQ(builder_.pending_inband(), 0u);
}

TEST_F(SpanBuilderTest, EachKeepAliveRequestGetsTheParentItsOwnFrameNamed) {
  const std::string request = "GET /a HTTP/1.1\r\n\r\n";
  const std::string response = "HTTP/1.1 200 OK\r\n\r\n";
  Feed(script_.Accept(1, 7, 100));
  Feed(script_.Inband(InbandEvent::kReceived, 1, 7, 0x71, 101));
  Feed(script_.Recv(1, 7, 200, request));
  Feed(script_.Send(1, 7, 300, response));
  Feed(script_.Inband(InbandEvent::kReceived, 1, 7, 0x72, 102));
  Feed(script_.Recv(1, 7, 400, request));
  Feed(script_.Send(1, 7, 500, response));
  Feed(script_.Close(1, 7, 600));

  ASSERT_EQ(spans_.size(), 2u);
  EXPECT_EQ(spans_[0].parent_span_id(), 101u);
  EXPECT_EQ(spans_[0].attributes().at("inband.trace_id"), "0000000000000071");
  EXPECT_EQ(spans_[1].request_offset(), request.size());
  EXPECT_EQ(spans_[1].parent_span_id(), 102u);
  EXPECT_EQ(spans_[1].attributes().at("inband.trace_id"), "0000000000000072");
}

// Two pipelined requests read in one call are one span: it takes the first request's
// parent, and the second's record is dropped when the next span starts past it.
TEST_F(SpanBuilderTest, PipelinedRequestsInOneSpanTakeTheFirstRequestsParent) {
  const std::string request = "GET /a HTTP/1.1\r\n\r\n";
  Feed(script_.Accept(1, 7, 100));
  Feed(script_.Inband(InbandEvent::kReceived, 1, 7, 0x71, 101));
  InbandRecord second = script_.Inband(InbandEvent::kReceived, 1, 7, 0x72, 102);
  second.offset = request.size();
  Feed(second);
  Feed(script_.Recv(1, 7, 200, request + request));
  Feed(script_.Send(1, 7, 300, "HTTP/1.1 200 OK\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"));
  Feed(script_.Inband(InbandEvent::kReceived, 1, 7, 0x73, 103));
  Feed(script_.Recv(1, 7, 400, request));
  Feed(script_.Close(1, 7, 500));

  ASSERT_EQ(spans_.size(), 2u);
  EXPECT_EQ(spans_[0].parent_span_id(), 101u);
  EXPECT_EQ(spans_[1].parent_span_id(), 103u);
  EXPECT_EQ(builder_.pending_inband(), 0u);
}

TEST_F(SpanBuilderTest, APeerThatAnswersUnframedIsCounted) {
  Feed(script_.Connect(1, 5, 100));
  Feed(script_.Inband(InbandEvent::kSent, 1, 5, kInbandTrace, kInbandSpan));
  Feed(script_.Send(1, 5, 200, "GET / HTTP/1.1\r\n\r\n"));
  Feed(script_.Inband(InbandEvent::kPeerNotHooked, 1, 5, 0, 0));
  Feed(script_.Recv(1, 5, 300, "HTTP/1.1 200 OK\r\n\r\n"));
  Feed(script_.Close(1, 5, 400));

  EXPECT_EQ(builder_.inband_peers_not_hooked(), 1u);
  ASSERT_EQ(spans_.size(), 1u);
  EXPECT_EQ(spans_[0].span_id(), kInbandSpan);  // its request was framed all the same
}

TEST_F(SpanBuilderTest, AnInbandRecordOfAnUnknownConnectionIsCountedAndIgnored) {
  HookScript other;
  other.Connect(9, 5, 100);  // never fed
  Feed(other.Inband(InbandEvent::kSent, 9, 5, kInbandTrace, kInbandSpan));
  Feed(other.Inband(InbandEvent::kPeerNotHooked, 9, 5, 0, 0));

  EXPECT_EQ(builder_.events_without_connection(), 2u);
  EXPECT_EQ(builder_.inband_peers_not_hooked(), 0u);
  EXPECT_EQ(builder_.pending_inband(), 0u);
}

TEST_F(SpanBuilderTest, InbandRecordsWaitingForTheirSpanAreBounded) {
  Feed(script_.Accept(1, 7, 100));
  for (uint64_t offset = 1; offset <= 1000; ++offset) {
    InbandRecord r = script_.Inband(InbandEvent::kReceived, 1, 7, kInbandTrace, offset);
    r.offset = offset;
    Feed(r);
  }
  EXPECT_EQ(builder_.pending_inband(), SpanBuilder::kMaxPendingInband);

  // The highest offsets are the ones kept: a request at the last one still gets its
  // parent, and the others below it go.
  Feed(script_.Recv(1, 7, 200, std::string(1000, 'x')));
  Feed(script_.Send(1, 7, 300, "ok"));
  Feed(script_.Recv(1, 7, 400, "GET / HTTP/1.1\r\n\r\n"));
  builder_.FinishAll();
  ASSERT_EQ(spans_.size(), 2u);
  EXPECT_EQ(spans_[0].parent_span_id(), 0u);
  EXPECT_EQ(spans_[1].request_offset(), 1000u);
  EXPECT_EQ(spans_[1].parent_span_id(), 1000u);
  EXPECT_EQ(builder_.pending_inband(), 0u);
}

}  // namespace
}  // namespace reptrace

namespace reptrace {
namespace {

TEST_F(SpanBuilderTest, SpansOfAProcessInAPodCarryItsWorkloadNamedWhenTheNamerCan) {
  int asked = 0;
  bool listed = false;
  builder_.SetWorkloadNamer([&](Workload* w) {
    ++asked;
    if (!listed) return false;
    w->pod_name = "web-7d9f";
    w->pod_namespace = "shop";
    w->container_name = "web";
    return true;
  });
  HookScript pod_process{5151};
  constexpr uint64_t kPodProcess = 88;
  Workload workload;
  workload.container_id = std::string(64, 'a');
  workload.pod_uid = "5f0a1c3e-8f2b-4d6a-9c1e-2b3d4e5f6a7b";
  builder_.OnHello(kPodProcess, pod_process.Hello("web", "python3"), workload);
  EXPECT_EQ(asked, 1);  // at the hello: a pod not yet listed gets listed meanwhile
  const std::string request = "GET /a HTTP/1.1\r\n\r\n";
  const std::string response = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
  auto exchange = [&](uint64_t conn) {
    FeedTo(kPodProcess, pod_process.Accept(conn, 7, 1000));
    FeedTo(kPodProcess, pod_process.Recv(conn, 7, 2000, request));
    FeedTo(kPodProcess, pod_process.Send(conn, 7, 3000, response));
    FeedTo(kPodProcess, pod_process.Close(conn, 7, 4000));
  };
  exchange(1);
  ASSERT_EQ(spans_.size(), 1u);
  // Not named yet: what the cgroup said, beside the protocol's attributes.
  EXPECT_EQ(spans_[0].attributes().at("container.id"), workload.container_id);
  EXPECT_EQ(spans_[0].attributes().at("k8s.pod.uid"), workload.pod_uid);
  EXPECT_EQ(spans_[0].attributes().count("k8s.pod.name"), 0u);
  EXPECT_EQ(spans_[0].attributes().at("http.request.method"), "GET");
  EXPECT_EQ(asked, 2);
  listed = true;
  exchange(2);
  exchange(3);
  ASSERT_EQ(spans_.size(), 3u);
  for (int i : {1, 2}) {
    EXPECT_EQ(spans_[i].attributes().at("k8s.pod.name"), "web-7d9f");
    EXPECT_EQ(spans_[i].attributes().at("k8s.namespace.name"), "shop");
    EXPECT_EQ(spans_[i].attributes().at("k8s.container.name"), "web");
    EXPECT_EQ(spans_[i].attributes().at("container.id"), workload.container_id);
  }
  EXPECT_EQ(asked, 3);  // named once: not asked again

  // The constructor's process is in no container: its spans carry none of it.
  Feed(script_.Accept(9, 7, 1000));
  Feed(script_.Recv(9, 7, 2000, request));
  Feed(script_.Send(9, 7, 3000, response));
  Feed(script_.Close(9, 7, 4000));
  ASSERT_EQ(spans_.size(), 4u);
  EXPECT_EQ(spans_[3].attributes().count("container.id"), 0u);
  EXPECT_EQ(spans_[3].attributes().count("k8s.pod.uid"), 0u);
  EXPECT_EQ(asked, 3);
}

}  // namespace
}  // namespace reptrace
