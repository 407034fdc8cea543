#include "agent/span_wire.h"

#include <string>

#include "gtest/gtest.h"

namespace reptrace {
namespace {

std::string Wire(const v1::Span& span) {
  std::string out(SpanWireSize(span), '\0');
  uint8_t* begin = reinterpret_cast<uint8_t*>(out.data());
  EXPECT_EQ(WriteSpanWire(span, begin), begin + out.size());
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
  (*span.mutable_attributes())["http.method"] = "GET";  // one entry: one order
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

TEST(SpanWire, IsWhatProtobufWritesForEveryField) {
  const v1::Span span = Full();
  EXPECT_EQ(SpanWireSize(span), span.ByteSizeLong());
  EXPECT_EQ(Wire(span), span.SerializeAsString());
}

TEST(SpanWire, LeavesOutDefaultsButKeepsSetEmptyEndpoints) {
  v1::Span span;
  EXPECT_EQ(Wire(span), span.SerializeAsString());
  EXPECT_EQ(SpanWireSize(span), 0u);
  span.mutable_local();  // set, empty (a Unix-domain connection's)
  span.mutable_peer()->set_port(1);
  EXPECT_EQ(Wire(span), span.SerializeAsString());
  EXPECT_EQ(SpanWireSize(span), span.ByteSizeLong());
}

TEST(SpanWire, WritesNegativeTimesAsProtobufDoes) {
  v1::Span span;
  span.set_start_ns(-1);
  span.set_end_ns(INT64_MIN);
  EXPECT_EQ(Wire(span), span.SerializeAsString());
}

TEST(SpanWire, WritesAttributesInTheMapsOwnOrder) {
  v1::Span span = Full();
  auto& attributes = *span.mutable_attributes();
  attributes["http.request.method"] = "GET";
  attributes["url.path"] = "/cart/" + std::string(200, 'y');
  attributes["http.response.status_code"] = "200";
  attributes["empty"] = "";
  attributes[""] = "no key";
  EXPECT_EQ(SpanWireSize(span), span.ByteSizeLong());
  EXPECT_EQ(Wire(span), span.SerializeAsString());
  v1::Span parsed;
  ASSERT_TRUE(parsed.ParseFromString(Wire(span)));
  EXPECT_EQ(parsed.DebugString(), span.DebugString());
}

}  // namespace
}  // namespace reptrace
