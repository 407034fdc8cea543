#include "controller/internal/agent_message.h"

#include <cstdint>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>

#include "absl/status/status.h"

namespace reptrace::controller::internal {
namespace {

using google::protobuf::internal::WireFormatLite;

// Field numbers of proto/reptrace.proto.
constexpr int kAgentMessageBatchField = 2;
constexpr int kBatchIdField = 1;
constexpr int kBatchSpansField = 2;
constexpr int kBatchCountersField = 3;

// Rebuilds a SpanBatch from its wire form span by span. False if the bytes are not a
// well-formed message or carry no batch id.
bool ParseBatchBySpan(const std::string& bytes, v1::SpanBatch* batch, int* unparseable) {
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()),
                                            static_cast<int>(bytes.size()));
  bool has_batch_id = false;
  while (const uint32_t tag = in.ReadTag()) {
    const int field = WireFormatLite::GetTagFieldNumber(tag);
    const auto wire_type = WireFormatLite::GetTagWireType(tag);
    if (field == kBatchIdField && wire_type == WireFormatLite::WIRETYPE_VARINT) {
      uint64_t batch_id = 0;
      if (!in.ReadVarint64(&batch_id)) return false;
      batch->set_batch_id(batch_id);
      has_batch_id = true;
    } else if ((field == kBatchSpansField || field == kBatchCountersField) &&
               wire_type == WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
      std::string value;
      if (!WireFormatLite::ReadBytes(&in, &value)) return false;
      if (field == kBatchCountersField) {
        batch->mutable_counters()->ParseFromString(value);  // counters hold no strings
      } else if (!batch->add_spans()->ParseFromString(value)) {
        batch->mutable_spans()->RemoveLast();
        ++*unparseable;
      }
    } else if (!WireFormatLite::SkipField(&in, tag)) {
      return false;
    }
  }
  return in.ConsumedEntireMessage() && has_batch_id;
}

}  // namespace

absl::StatusOr<ParsedAgentMessage> ParseAgentMessage(const std::string& bytes,
                                                     google::protobuf::Arena* arena) {
  ParsedAgentMessage parsed;
  parsed.message = google::protobuf::Arena::CreateMessage<v1::AgentMessage>(arena);
  if (parsed.message->ParseFromString(bytes)) return parsed;
  parsed.message = google::protobuf::Arena::CreateMessage<v1::AgentMessage>(arena);
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()),
                                            static_cast<int>(bytes.size()));
  const uint32_t tag = in.ReadTag();
  std::string batch_bytes;
  if (WireFormatLite::GetTagFieldNumber(tag) == kAgentMessageBatchField &&
      WireFormatLite::GetTagWireType(tag) == WireFormatLite::WIRETYPE_LENGTH_DELIMITED &&
      WireFormatLite::ReadBytes(&in, &batch_bytes) && in.ReadTag() == 0 &&
      ParseBatchBySpan(batch_bytes, parsed.message->mutable_batch(),
                       &parsed.spans_unparseable)) {
    return parsed;
  }
  return absl::InvalidArgumentError(
      "an agent message cannot be parsed (a string field that is not UTF-8?)");
}

}  // namespace reptrace::controller::internal
