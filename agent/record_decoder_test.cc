#include "agent/record_decoder.h"

#include <cstring>
#include <string>
#include <vector>

#include "agent/testing/hook_script.h"
#include "gtest/gtest.h"

namespace reptrace {
namespace {

using testing::AsBytes;
using testing::HookScript;

// A hello, one HTTP exchange seen by a server, a stats record and a close.
std::string GoodStream() {
  HookScript script;
  std::string bytes = AsBytes(script.Hello());
  bytes += AsBytes(script.Accept(1, 7, 1000));
  bytes += AsBytes(script.Recv(1, 7, 2000, "GET / HTTP/1.1\r\n\r\n"));
  bytes += AsBytes(script.Send(1, 7, 3000, "HTTP/1.1 200 OK\r\n\r\n"));
  bytes += AsBytes(script.Stats(4, 0));
  bytes += AsBytes(script.Close(1, 7, 4000));
  return bytes;
}

TEST(RecordDecoder, DecodesAGoodStreamSplitAtEveryByte) {
  const std::string stream = GoodStream();
  for (size_t split = 0; split <= stream.size(); ++split) {
    RecordDecoder decoder;
    std::vector<Record> records;
    ASSERT_TRUE(decoder.Feed(absl::string_view(stream).substr(0, split), &records).ok());
    ASSERT_TRUE(decoder.Feed(absl::string_view(stream).substr(split), &records).ok());
    ASSERT_TRUE(decoder.Finish().ok()) << split;
    ASSERT_EQ(records.size(), 6u) << split;
    EXPECT_TRUE(std::holds_alternative<HelloRecord>(records[0]));
    EXPECT_EQ(std::string(std::get<HelloRecord>(records[0]).service), "shop");
    ASSERT_TRUE(std::holds_alternative<DataRecord>(records[2]));
    EXPECT_EQ(std::get<DataRecord>(records[2]).result, 18);
    EXPECT_EQ(std::get<DataRecord>(records[2]).capture_len, 18);
    const auto& data = std::get<DataRecord>(records[2]);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(data.capture), 18),
              "GET / HTTP/1.1\r\n\r\n");
    EXPECT_TRUE(std::holds_alternative<StatsRecord>(records[4]));
    EXPECT_EQ(std::get<EventRecord>(records[5]).kind, static_cast<uint8_t>(EventKind::kClose));
  }
}

TEST(RecordDecoder, DecodesAStreamFedOneByteAtATime) {
  const std::string stream = GoodStream();
  RecordDecoder decoder;
  std::vector<Record> records;
  for (char c : stream) ASSERT_TRUE(decoder.Feed(absl::string_view(&c, 1), &records).ok());
  EXPECT_TRUE(decoder.Finish().ok());
  EXPECT_EQ(records.size(), 6u);
  EXPECT_EQ(decoder.records_decoded(), 6u);
}

TEST(RecordDecoder, AnEmptyStreamIsFine) {
  RecordDecoder decoder;
  EXPECT_TRUE(decoder.Finish().ok());
}

TEST(RecordDecoder, RefusesGarbage) {
  RecordDecoder decoder;
  std::vector<Record> records;
  absl::Status status = decoder.Feed("this is not a record stream at all", &records);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("magic"), absl::string_view::npos) << status;
  EXPECT_TRUE(records.empty());
  // It stays failed.
  EXPECT_FALSE(decoder.Feed(GoodStream(), &records).ok());
  EXPECT_FALSE(decoder.Finish().ok());
  EXPECT_TRUE(records.empty());
}

TEST(RecordDecoder, RefusesGarbageAfterGoodRecordsButKeepsThem) {
  HookScript script;
  std::string bytes = AsBytes(script.Hello()) + AsBytes(script.Accept(1, 7, 1000));
  bytes += std::string(sizeof(RecordHeader), '\x5a');
  RecordDecoder decoder;
  std::vector<Record> records;
  EXPECT_FALSE(decoder.Feed(bytes, &records).ok());
  EXPECT_EQ(records.size(), 2u);
}

TEST(RecordDecoder, ATruncatedRecordIsAnErrorAtEndOfStream) {
  const std::string stream = GoodStream();
  RecordDecoder decoder;
  std::vector<Record> records;
  ASSERT_TRUE(decoder.Feed(stream.substr(0, stream.size() - 5), &records).ok());
  absl::Status status = decoder.Finish();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("truncated record"), absl::string_view::npos) << status;
  EXPECT_EQ(records.size(), 5u);
}

TEST(RecordDecoder, RefusesASizeThatDoesNotMatchTheType) {
  HookScript script;
  EventRecord event = script.Accept(1, 7, 1000);
  event.header.size = sizeof(StatsRecord);
  RecordDecoder decoder;
  std::vector<Record> records;
  absl::Status status = decoder.Feed(AsBytes(script.Hello()) + AsBytes(event), &records);
  EXPECT_NE(status.message().find("size"), absl::string_view::npos) << status;
  EXPECT_EQ(records.size(), 1u);
}

TEST(RecordDecoder, RefusesAnUnknownType) {
  HookScript script;
  HelloRecord hello = script.Hello();
  hello.header.type = 9;
  RecordDecoder decoder;
  std::vector<Record> records;
  absl::Status status = decoder.Feed(AsBytes(hello), &records);
  EXPECT_NE(status.message().find("unknown record type"), absl::string_view::npos) << status;
}

TEST(RecordDecoder, RefusesAStreamThatDoesNotStartWithAHello) {
  HookScript script;
  script.Hello();
  RecordDecoder decoder;
  std::vector<Record> records;
  absl::Status status = decoder.Feed(AsBytes(script.Accept(1, 7, 1000)), &records);
  EXPECT_NE(status.message().find("not a hello"), absl::string_view::npos) << status;
  EXPECT_TRUE(records.empty());
}

TEST(RecordDecoder, RefusesASecondHello) {
  HookScript script;
  RecordDecoder decoder;
  std::vector<Record> records;
  EXPECT_FALSE(decoder.Feed(AsBytes(script.Hello()) + AsBytes(script.Hello()), &records).ok());
}

TEST(RecordDecoder, RefusesAnotherWireVersion) {
  HookScript script;
  RecordDecoder decoder;
  std::vector<Record> records;
  absl::Status status = decoder.Feed(AsBytes(script.Hello("a", "b", kWireVersion + 1)), &records);
  EXPECT_NE(status.message().find("version"), absl::string_view::npos) << status;
}

TEST(RecordDecoder, ReadsWireVersions2To4Only) {
  HookScript script;
  for (uint16_t version : {2, 3, 4}) {
    RecordDecoder decoder;
    std::vector<Record> records;
    EXPECT_TRUE(decoder.Feed(AsBytes(script.Hello("a", "b", version)) +
                                 AsBytes(script.Accept(1, 7, 1000)),
                             &records)
                    .ok())
        << version;
    EXPECT_EQ(records.size(), 2u) << version;
  }
  for (uint16_t version : {0, 1, 5}) {
    RecordDecoder decoder;
    std::vector<Record> records;
    absl::Status status = decoder.Feed(AsBytes(script.Hello("a", "b", version)), &records);
    EXPECT_NE(status.message().find("version"), absl::string_view::npos) << status;
  }
}

TEST(RecordDecoder, RefusesUnknownHelloFlagsFromVersion3) {
  HookScript script;
  HelloRecord hello = script.Hello("a", "b", 3);
  hello.flags = kHelloFlagRing;
  {
    RecordDecoder decoder;
    std::vector<Record> records;
    EXPECT_TRUE(decoder.Feed(AsBytes(hello), &records).ok());
  }
  hello.flags = kHelloFlagRing | 4;
  {
    RecordDecoder decoder;
    std::vector<Record> records;
    absl::Status status = decoder.Feed(AsBytes(hello), &records);
    EXPECT_NE(status.message().find("flags"), absl::string_view::npos) << status;
  }
  // Version 2's reserved field, whatever it holds.
  hello = script.Hello("a", "b", 2);
  hello.flags = 0xffff;
  RecordDecoder decoder;
  std::vector<Record> records;
  EXPECT_TRUE(decoder.Feed(AsBytes(hello), &records).ok());
}

TEST(RecordDecoder, DecodesAnInbandRecordOfEachEvent) {
  HookScript script;
  std::string bytes = AsBytes(script.Hello()) + AsBytes(script.Connect(1, 7, 1000));
  bytes += AsBytes(script.Inband(InbandEvent::kSent, 1, 7, 0xabc, 0x1234));
  bytes += AsBytes(script.Send(1, 7, 2000, "GET / HTTP/1.1\r\n\r\n"));
  bytes += AsBytes(script.Inband(InbandEvent::kPeerNotHooked, 1, 7, 0, 0));
  bytes += AsBytes(script.Inband(InbandEvent::kReceived, 1, 7, 0xdef, 0x5678));
  RecordDecoder decoder;
  std::vector<Record> records;
  ASSERT_TRUE(decoder.Feed(bytes, &records).ok());
  EXPECT_TRUE(decoder.Finish().ok());

  ASSERT_EQ(records.size(), 6u);
  ASSERT_TRUE(std::holds_alternative<InbandRecord>(records[2]));
  const auto& sent = std::get<InbandRecord>(records[2]);
  EXPECT_EQ(sent.event, static_cast<uint8_t>(InbandEvent::kSent));
  EXPECT_EQ(sent.conn_id, 1u);
  EXPECT_EQ(sent.tid, 7u);
  EXPECT_EQ(sent.offset, 0u);
  EXPECT_EQ(sent.trace_id, 0xabcu);
  EXPECT_EQ(sent.span_id, 0x1234u);
  EXPECT_EQ(std::get<InbandRecord>(records[4]).event,
            static_cast<uint8_t>(InbandEvent::kPeerNotHooked));
  EXPECT_EQ(std::get<InbandRecord>(records[5]).span_id, 0x5678u);
}

// Each way an InbandRecord can be wrong, and the words its error names.
TEST(RecordDecoder, RefusesABadInbandRecord) {
  struct Case {
    const char* what;
    void (*spoil)(InbandRecord&);
    const char* message;
  };
  const Case cases[] = {
      {"event 0", [](InbandRecord& r) { r.event = 0; }, "unknown event 0"},
      {"event 4", [](InbandRecord& r) { r.event = 4; }, "unknown event 4"},
      {"reserved[0]", [](InbandRecord& r) { r.reserved[0] = 1; }, "reserved"},
      {"reserved[2]", [](InbandRecord& r) { r.reserved[2] = 0x80; }, "reserved"},
      {"kSent without a span id", [](InbandRecord& r) { r.span_id = 0; }, "span id 0"},
      {"kReceived without a span id",
       [](InbandRecord& r) {
         r.event = static_cast<uint8_t>(InbandEvent::kReceived);
         r.span_id = 0;
       },
       "span id 0"},
      {"a size that is not its own",
       [](InbandRecord& r) { r.header.size = sizeof(InbandRecord) - 8; }, "size"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    HookScript script;
    const std::string good = AsBytes(script.Hello()) + AsBytes(script.Connect(1, 7, 1000));
    InbandRecord inband = script.Inband(InbandEvent::kSent, 1, 7, 0xabc, 0x1234);
    c.spoil(inband);
    RecordDecoder decoder;
    std::vector<Record> records;
    absl::Status status = decoder.Feed(good + AsBytes(inband), &records);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(status.message().find(c.message), absl::string_view::npos) << status;
    EXPECT_EQ(records.size(), 2u);  // the good records before it
  }
}

TEST(RecordDecoder, RefusesNamesWithoutNul) {
  HookScript script;
  HelloRecord hello = script.Hello();
  std::memset(hello.process, 'x', kNameBytes);
  RecordDecoder decoder;
  std::vector<Record> records;
  EXPECT_FALSE(decoder.Feed(AsBytes(hello), &records).ok());
  hello = script.Hello();
  std::memset(hello.service, 'x', kNameBytes);
  RecordDecoder decoder2;
  EXPECT_FALSE(decoder2.Feed(AsBytes(hello), &records).ok());
}

// Each field check of an event record.
TEST(RecordDecoder, RefusesBadEventFields) {
  struct Case {
    const char* what;
    void (*spoil)(EventRecord&);
  };
  const Case cases[] = {
      {"kind", [](EventRecord& e) { e.kind = 0; }},
      {"kind", [](EventRecord& e) { e.kind = 7; }},
      {"role", [](EventRecord& e) { e.role = 3; }},
      {"family", [](EventRecord& e) { e.family = 5; }},
      {"capture_len", [](EventRecord& e) { e.capture_len = kCaptureBytes + 1; }},
  };
  for (const Case& c : cases) {
    HookScript script;
    EventRecord event = script.Accept(1, 7, 1000);
    c.spoil(event);
    RecordDecoder decoder;
    std::vector<Record> records;
    absl::Status status = decoder.Feed(AsBytes(script.Hello()) + AsBytes(event), &records);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.what;
    EXPECT_NE(status.message().find(c.what), absl::string_view::npos) << status;
    EXPECT_EQ(records.size(), 1u);
  }
  // The extremes that are allowed.
  HookScript script;
  EventRecord event = script.Accept(1, 7, 1000);
  event.family = 6;
  event.capture_len = kCaptureBytes;
  RecordDecoder decoder;
  std::vector<Record> records;
  EXPECT_TRUE(decoder.Feed(AsBytes(script.Hello()) + AsBytes(event), &records).ok());
  // A Unix-domain socket's open record (family kFamilyUnix, no addresses).
  EventRecord unix_accept = script.Accept(2, 7, 1000);
  unix_accept.family = kFamilyUnix;
  records.clear();
  EXPECT_TRUE(decoder.Feed(AsBytes(unix_accept), &records).ok());
  EXPECT_EQ(records.size(), 1u);
  // kThreadStart carries no addresses (family 0).
  EventRecord start = script.Accept(1, 9, 1000);
  start.kind = static_cast<uint8_t>(EventKind::kThreadStart);
  start.family = 0;
  start.fd = 7;
  RecordDecoder decoder2;
  records.clear();
  EXPECT_TRUE(decoder2.Feed(AsBytes(script.Hello()) + AsBytes(start), &records).ok());
  EXPECT_EQ(records.size(), 2u);
}

// Data records are 48 bytes, or 56 + the capture padded to 8 at a message start or in the
// rest of its head: a stream of every size decodes, with the bytes past a record's size zero.
TEST(RecordDecoder, DecodesDataRecordsOfEverySize) {
  HookScript script;
  std::string bytes = AsBytes(script.Hello()) + AsBytes(script.Accept(1, 7, 1000));
  const DataRecord start = script.Recv(1, 7, 2000, "GET /x");  // 6 bytes: padded to 8
  const DataRecord more = script.Recv(1, 7, 2100, " HTTP/1.1\r\n");  // 11 more of the head
  const DataRecord big = script.Recv(1, 7, 2200, std::string(200, 'b'));  // the head's end
  const DataRecord rest = script.Recv(1, 7, 2300, "past the head");
  const DataRecord eof = script.Eof(1, 7, 2400);
  EXPECT_EQ(start.header.size, 64u);
  EXPECT_EQ(more.header.size, 72u);
  EXPECT_EQ(big.header.size, 56u + 112u);  // 128 - 17 = 111 bytes of it, padded to 112
  EXPECT_EQ(rest.header.size, 48u);
  bytes += AsBytes(start) + AsBytes(more) + AsBytes(big) + AsBytes(rest) + AsBytes(eof);
  RecordDecoder decoder;
  std::vector<Record> records;
  ASSERT_TRUE(decoder.Feed(bytes, &records).ok());
  ASSERT_TRUE(decoder.Finish().ok());
  ASSERT_EQ(records.size(), 7u);
  const DataRecord& a = std::get<DataRecord>(records[2]);
  EXPECT_EQ(a.hash, 0u);  // left to the reader: the capture holds every byte
  EXPECT_EQ(DataRecordHash(a), Fingerprint64("GET /x", 6));
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(a.capture), 6), "GET /x");
  EXPECT_EQ(a.capture[6], 0);
  const DataRecord& b = std::get<DataRecord>(records[3]);
  EXPECT_EQ(b.offset, 6u);
  EXPECT_EQ(b.flags, kFlagHeadCapture);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(b.capture), b.capture_len),
            " HTTP/1.1\r\n");
  EXPECT_EQ(std::get<DataRecord>(records[4]).capture_len, 111);
  const DataRecord& d = std::get<DataRecord>(records[5]);
  EXPECT_EQ(d.flags, 0);
  EXPECT_EQ(d.capture_len, 0);
  EXPECT_EQ(d.hash, 0u);
  EXPECT_EQ(std::get<DataRecord>(records[6]).result, 0);
}

// Each check of a data record, the size against its flags and capture_len above all.
// Records are decoded into their place in the vector: a short one reused a slot whose
// earlier record had a capture, and still reads zero past its wire size.
TEST(RecordDecoder, AShortDataRecordIsZeroPastItsWireSize) {
  HookScript script;
  script.Accept(1, 7, 1000);
  RecordDecoder decoder;
  std::vector<Record> records;
  ASSERT_TRUE(decoder.Feed(AsBytes(script.Hello()), &records).ok());
  records.clear();
  ASSERT_TRUE(decoder.Feed(AsBytes(script.Recv(1, 7, 2000, std::string(300, 'x'))), &records)
                  .ok());
  records.clear();
  DataRecord more = script.Recv(1, 7, 2001, "y");  // a message's second call: 48 bytes
  ASSERT_EQ(more.header.size, kDataRecordBaseSize);
  ASSERT_TRUE(decoder.Feed(AsBytes(more), &records).ok());
  ASSERT_EQ(records.size(), 1u);
  const DataRecord& decoded = std::get<DataRecord>(records[0]);
  EXPECT_EQ(decoded.hash, 0u);
  EXPECT_EQ(decoded.capture[0], 0);
  EXPECT_EQ(decoded.capture[kCaptureBytes - 1], 0);
}

TEST(RecordDecoder, RefusesBadDataRecords) {
  struct Case {
    const char* what;
    void (*spoil)(DataRecord&);
  };
  const Case cases[] = {
      {"kind", [](DataRecord& d) { d.kind = static_cast<uint8_t>(EventKind::kClose); }},
      {"flags", [](DataRecord& d) { d.flags |= kFlagReannounce; }},
      {"flags", [](DataRecord& d) { d.flags |= kFlagHeadCapture; }},  // both: nonsense
      {"capture_len", [](DataRecord& d) { d.flags = 0; d.header.size = 48; }},
      {"size", [](DataRecord& d) { d.header.size = 48; }},            // message start, short
      {"size", [](DataRecord& d) { d.header.size += 8; }},            // one word too long
      {"size", [](DataRecord& d) { d.capture_len = 9; }},             // needs 72, says 64
      {"size", [](DataRecord& d) { d.header.size = 60; }},            // not a multiple of 8
      {"size", [](DataRecord& d) { d.header.size = sizeof(DataRecord) + 8; }},
  };
  for (const Case& c : cases) {
    HookScript script;
    std::string bytes = AsBytes(script.Hello()) + AsBytes(script.Accept(1, 7, 1000));
    DataRecord data = script.Recv(1, 7, 2000, "GET /x");
    c.spoil(data);
    bytes += std::string(reinterpret_cast<const char*>(&data), data.header.size);
    RecordDecoder decoder;
    std::vector<Record> records;
    absl::Status status = decoder.Feed(bytes, &records);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.what;
    EXPECT_NE(status.message().find(c.what), absl::string_view::npos) << c.what << ": "
                                                                       << status;
    EXPECT_EQ(records.size(), 2u) << c.what;
  }
  // The largest: a full capture.
  HookScript script;
  script.Accept(1, 7, 1000);
  const DataRecord full = script.Recv(1, 7, 2000, std::string(300, 'x'));
  EXPECT_EQ(full.header.size, sizeof(DataRecord));
  RecordDecoder decoder;
  std::vector<Record> records;
  EXPECT_TRUE(decoder.Feed(AsBytes(script.Hello()) + AsBytes(full), &records).ok());
  // A head capture: a message's second call, within its first kCaptureBytes.
  script.Accept(2, 7, 1000);
  script.Recv(2, 7, 2000, "GET");
  const DataRecord head = script.Recv(2, 7, 2001, " /x HTTP/1.1");
  EXPECT_EQ(head.flags, kFlagHeadCapture);
  EXPECT_EQ(head.capture_len, 12);
  EXPECT_EQ(head.header.size, 72u);
  records.clear();
  EXPECT_TRUE(decoder.Feed(AsBytes(head), &records).ok());
  EXPECT_EQ(records.size(), 1u);
}

}  // namespace
}  // namespace reptrace
