#include "agent/span_wire.h"

#include <deque>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "gtest/gtest.h"

namespace reptrace {
namespace {

// The bytes WriteSpanWire writes, in room of SpanWireSizeBound (a test that writes past
// the bound fails, under ASan and here).
std::string Wire(const SpanRecord& span) {
  std::string out(SpanWireSizeBound(span), '\0');
  uint8_t* begin = reinterpret_cast<uint8_t*>(out.data());
  const uint8_t* end = WriteSpanWire(span, begin);
  EXPECT_LE(end, begin + out.size());
  out.resize(static_cast<size_t>(end - begin));
  return out;
}

std::string Wire(const v1::Span& span) { return Wire(SpanRecordViewOf(span)); }

// What protobuf writes with map entries in key order (its default order is its hash
// table's, different from one message to the next).
std::string Deterministic(const v1::Span& span) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream stream(&out);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    EXPECT_TRUE(span.SerializeToCodedStream(&coded));
  }
  return out;
}

v1::Span Full() {
  v1::Span span;
  span.set_span_id(0x0123456789abcdefULL);
  span.set_parent_span_id(~uint64_t{0});
  span.set_kind(v1::SPAN_KIND_SERVER);
  span.set_service("checkout-service");
  span.set_node("node-a.cluster.local");
  span.set_pid(4194304);
  span.set_tid(7);
  span.set_process("nginx");
  span.set_name("GET /cart/" + std::string(300, 'x'));  // a two-byte length
  span.set_start_ns(1700000000123456789);
  span.set_end_ns(1700000000123999999);
  span.set_status(v1::SPAN_STATUS_ERROR);
  span.set_status_message("Connection refused");
  span.mutable_local()->set_ip(std::string("\x0a\x00\x00\x02", 4));
  span.mutable_local()->set_port(8080);
  span.mutable_peer()->set_ip(std::string(16, '\x01'));
  span.mutable_peer()->set_port(65535);
  span.set_request_offset(1);
  span.set_request_bytes(uint64_t{1} << 40);
  span.set_response_offset(300);
  span.set_response_bytes(612);
  span.set_request_hash(42);
  span.set_response_hash(~uint64_t{1});
  span.set_connection_id(9);
  span.set_trace_id(5);
  (*span.mutable_attributes())["http.request.method"] = "GET";
  (*span.mutable_attributes())["url.path"] = "/cart/" + std::string(200, 'y');
  (*span.mutable_attributes())["http.response.status_code"] = "200";
  return span;
}

// Every field of `message` (and of its message fields) is set.
void ExpectEveryFieldSet(const google::protobuf::Message& message) {
  const auto* descriptor = message.GetDescriptor();
  const auto* reflection = message.GetReflection();
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const auto* field = descriptor->field(i);
    const bool set = field->is_repeated() ? reflection->FieldSize(message, field) > 0
                                          : reflection->HasField(message, field);
    EXPECT_TRUE(set) << descriptor->full_name() << "." << field->name()
                     << " is not set by Full(): set it there, and write it in span_wire.cc";
    if (set && !field->is_repeated() &&
        field->cpp_type() == google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE) {
      ExpectEveryFieldSet(reflection->GetMessage(message, field));
    }
  }
}

// span_wire.cc writes the fields it knows; a field added to the .proto later would be
// left out of every span the agent sends. Full() sets every field there is, so the byte
// comparison below fails until span_wire.cc writes the new one too.
TEST(SpanWire, TheFullSpanSetsEveryFieldTheProtoHas) { ExpectEveryFieldSet(Full()); }

// ...and a field the record does not carry both ways fails this one.
TEST(SpanWire, ARecordCarriesEveryFieldOfTheMessage) {
  const v1::Span span = Full();
  EXPECT_EQ(ToSpanProto(SpanRecordViewOf(span)).DebugString(), span.DebugString());
}

TEST(SpanWire, IsWhatProtobufWritesForEveryField) {
  const v1::Span span = Full();
  EXPECT_EQ(Wire(span).size(), span.ByteSizeLong());
  EXPECT_EQ(Wire(span), Deterministic(span));
  EXPECT_EQ(Wire(span), Deterministic(ToSpanProto(SpanRecordViewOf(span))));
}

TEST(SpanWire, LeavesOutDefaultsButKeepsSetEmptyEndpoints) {
  v1::Span span;
  EXPECT_EQ(Wire(span), span.SerializeAsString());
  EXPECT_EQ(Wire(SpanRecord()).size(), 0u);
  span.mutable_local();  // set, empty (a Unix-domain connection's)
  span.mutable_peer()->set_port(1);
  EXPECT_EQ(Wire(span), span.SerializeAsString());
  EXPECT_EQ(Wire(span).size(), span.ByteSizeLong());
}

TEST(SpanWire, WritesNegativeTimesAsProtobufDoes) {
  v1::Span span;
  span.set_start_ns(-1);
  span.set_end_ns(INT64_MIN);
  EXPECT_EQ(Wire(span), span.SerializeAsString());
}

TEST(SpanWire, WritesAttributesInKeyOrder) {
  v1::Span span = Full();
  auto& attributes = *span.mutable_attributes();
  attributes["db.operation"] = "GET";
  attributes["empty"] = "";
  attributes[""] = "no key";
  attributes["z"] = std::string(300, 'z');  // a two-byte entry length
  EXPECT_EQ(Wire(span).size(), span.ByteSizeLong());
  EXPECT_EQ(Wire(span), Deterministic(span));
  v1::Span parsed;
  ASSERT_TRUE(parsed.ParseFromString(Wire(span)));
  EXPECT_EQ(parsed.DebugString(), span.DebugString());
}

TEST(SpanWire, TheSizeBoundIsAtLeastTheSize) {
  v1::Span full = Full();
  (*full.mutable_attributes())["k"] = std::string(20000, 'v');  // a three-byte length
  (*full.mutable_attributes())[""] = "";
  for (const v1::Span& span : {v1::Span(), Full(), full}) {
    const SpanRecord record = SpanRecordViewOf(span);
    EXPECT_GE(SpanWireSizeBound(record), Wire(record).size());
  }
  // Every number at its widest.
  SpanRecord widest;
  widest.span_id = widest.parent_span_id = widest.request_hash = widest.response_hash =
      widest.trace_id = ~uint64_t{0};
  widest.kind = static_cast<v1::SpanKind>(-1);
  widest.status = static_cast<v1::SpanStatus>(-1);
  widest.pid = widest.tid = ~uint32_t{0};
  widest.start_ns = widest.end_ns = -1;
  widest.request_offset = widest.request_bytes = widest.response_offset =
      widest.response_bytes = widest.connection_id = ~uint64_t{0};
  widest.local.SetIp(std::string(16, '\xff'));
  widest.local.port = ~uint32_t{0};
  widest.peer = widest.local;
  EXPECT_GE(SpanWireSizeBound(widest), Wire(widest).size());
}

TEST(SpanWire, ASpanCarryingItsConnectionsBytesIsWrittenTheSame) {
  v1::Span unix_domain = Full();
  unix_domain.mutable_local()->Clear();  // set, but empty
  unix_domain.mutable_peer()->Clear();
  for (const v1::Span& span : {v1::Span(), Full(), unix_domain}) {
    SpanRecord record = SpanRecordViewOf(span);
    const ConnectionWire connection = EncodeConnectionWire(record);
    record.connection_wire = &connection;
    EXPECT_EQ(Wire(record), Deterministic(span));
  }
}

TEST(SpanWire, AConnectionsBytesChangeWithEachOfItsFields) {
  const v1::Span full = Full();
  const SpanRecord base = SpanRecordViewOf(full);
  const ConnectionWire before = EncodeConnectionWire(base);
  const std::vector<std::function<void(SpanRecord&)>> changes = {
      [](SpanRecord& r) { r.kind = v1::SPAN_KIND_CLIENT; },
      [](SpanRecord& r) { r.service = "other-service"; },
      [](SpanRecord& r) { r.node = "node-b"; },
      [](SpanRecord& r) { r.pid = 4194305; },
      [](SpanRecord& r) { r.local.SetIp(std::string("\x0a\x00\x00\x03", 4)); },
      [](SpanRecord& r) { r.local.port = 8081; },
      [](SpanRecord& r) { r.peer.port = 1; },
      [](SpanRecord& r) { r.peer.set = false; },
  };
  for (size_t i = 0; i < changes.size(); ++i) {
    SpanRecord changed = base;
    changes[i](changed);
    const ConnectionWire after = EncodeConnectionWire(changed);
    EXPECT_TRUE(after.kind_to_pid != before.kind_to_pid || after.endpoints != before.endpoints)
        << "change " << i;
  }
  // The fields of the span itself are not the connection's.
  SpanRecord other_span = base;
  other_span.tid = 8;
  other_span.process = "other";
  other_span.name = "GET /";
  const ConnectionWire same = EncodeConnectionWire(other_span);
  EXPECT_EQ(same.kind_to_pid, before.kind_to_pid);
  EXPECT_EQ(same.endpoints, before.endpoints);
}

TEST(SpanRecord, SetAttributeKeepsKeysUniqueAndInOrder) {
  SpanRecord record;
  record.SetAttribute("url.path", "/a");
  record.SetAttribute("http.request.method", "GET");
  record.SetAttribute("dns.id", "7");
  record.SetAttribute("url.path", "/b");  // replaced, as in a map
  ASSERT_EQ(record.attributes.size(), 3u);
  EXPECT_EQ(record.attributes[0].key, "dns.id");
  EXPECT_EQ(record.attributes[1].key, "http.request.method");
  EXPECT_EQ(record.attributes[2].key, "url.path");
  EXPECT_EQ(record.attributes[2].value, "/b");
}

TEST(SpanRecord, SetAttributeInsertsAnywhereAsAMapWould) {
  // More keys than are stored inline, in an order that inserts at the front, the middle
  // and the end, some with a first byte in common.
  // Bytes past 0x7f order after ASCII, as in a std::string's comparison.
  const std::vector<std::string> keys = {"m",  "c", "x",        "a",  "p",      "d",  "z",
                                         "b",  "n", "\xc3\xa9", "ab", "\x7f", "c", "y"};
  std::deque<std::string> values;  // the record views them: a deque never moves them
  SpanRecord record;
  std::map<std::string, std::string> map;
  for (size_t i = 0; i < keys.size(); ++i) {
    values.push_back(std::to_string(i));
    record.SetAttribute(keys[i], values.back());
    map[keys[i]] = values.back();
  }
  using Pairs = std::vector<std::pair<std::string, std::string>>;
  Pairs got;
  for (const SpanAttribute& a : record.attributes) got.emplace_back(a.key, a.value);
  EXPECT_EQ(got, Pairs(map.begin(), map.end()));
}

}  // namespace
}  // namespace reptrace
