#include "agent/record_decoder.h"

#include <cstring>
#include <variant>

#include "absl/strings/str_format.h"

namespace reptrace {
namespace {

bool IsNulTerminated(const char (&name)[kNameBytes]) {
  return std::memchr(name, '\0', kNameBytes) != nullptr;
}

// Version 2 hooks (records on the socket only) are still read: an agent upgraded before
// the programs it traces restart.
constexpr uint16_t kOldestWireVersion = 2;

absl::Status CheckHello(const HelloRecord& hello) {
  if (hello.version < kOldestWireVersion || hello.version > kWireVersion) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "hello declares wire version %d, this agent speaks %d to %d", hello.version,
        kOldestWireVersion, kWireVersion));
  }
  // Version 2 had a reserved field there, never read.
  if (hello.version >= 3 && (hello.flags & ~kHelloFlagRing) != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("hello has unknown flags 0x%04x", hello.flags));
  }
  if (!IsNulTerminated(hello.service) || !IsNulTerminated(hello.process)) {
    return absl::InvalidArgumentError("hello has a name that is not NUL-terminated");
  }
  return absl::OkStatus();
}

absl::Status CheckEvent(const EventRecord& event) {
  if (event.kind < static_cast<uint8_t>(EventKind::kConnect) ||
      event.kind > static_cast<uint8_t>(EventKind::kThreadStart)) {
    return absl::InvalidArgumentError(absl::StrFormat("unknown event kind %d", event.kind));
  }
  if (event.kind == static_cast<uint8_t>(EventKind::kThreadStart)) return absl::OkStatus();
  if (event.role > static_cast<uint8_t>(SocketRole::kServer)) {
    return absl::InvalidArgumentError(absl::StrFormat("unknown socket role %d", event.role));
  }
  if (event.family != 4 && event.family != 6 && event.family != kFamilyUnix) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "address family %d is neither 4, 6 nor %d (unix)", event.family, kFamilyUnix));
  }
  if (event.capture_len > kCaptureBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "capture_len %d exceeds %d", event.capture_len, kCaptureBytes));
  }
  return absl::OkStatus();
}

absl::Status CheckData(const DataRecord& data, size_t size) {
  if (data.kind != static_cast<uint8_t>(EventKind::kSend) &&
      data.kind != static_cast<uint8_t>(EventKind::kRecv)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("data record of kind %d, not send or receive", data.kind));
  }
  if ((data.flags & ~(kFlagMessageStart | kFlagHeadCapture)) != 0 ||
      data.flags == (kFlagMessageStart | kFlagHeadCapture)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("data record with unknown flags 0x%02x", data.flags));
  }
  if (data.capture_len > kCaptureBytes ||
      (data.capture_len != 0 && (data.flags & (kFlagMessageStart | kFlagHeadCapture)) == 0)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "data record with capture_len %d and flags 0x%02x", data.capture_len, data.flags));
  }
  const size_t expected = DataRecordWireSize(data.flags, data.capture_len);
  if (size != expected) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "data record declares size %d, its flags and capture_len make it %d", size,
        expected));
  }
  return absl::OkStatus();
}

absl::Status CheckInband(const InbandRecord& inband) {
  if (inband.event < static_cast<uint8_t>(InbandEvent::kSent) ||
      inband.event > static_cast<uint8_t>(InbandEvent::kPeerNotHooked)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("in-band record of unknown event %d", inband.event));
  }
  if (inband.reserved[0] != 0 || inband.reserved[1] != 0 || inband.reserved[2] != 0) {
    return absl::InvalidArgumentError("in-band record with non-zero reserved bytes");
  }
  if (inband.span_id == 0 &&
      inband.event != static_cast<uint8_t>(InbandEvent::kPeerNotHooked)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("in-band record of event %d with span id 0", inband.event));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RecordDecoder::CheckHeader(const RecordHeader& header) const {
  if (header.magic != kRecordMagic) {
    return absl::InvalidArgumentError(
        absl::StrFormat("record %d: bad magic 0x%08x", records_decoded_, header.magic));
  }
  const bool data = header.type == static_cast<uint16_t>(RecordType::kData);
  const size_t expected = RecordSizeFor(header.type);
  if (expected == 0 && !data) {
    return absl::InvalidArgumentError(
        absl::StrFormat("record %d: unknown record type %d", records_decoded_, header.type));
  }
  if (!RecordSizeValid(header.type, header.size)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "record %d: type %d declares size %d, expected %s", records_decoded_, header.type,
        header.size,
        data ? absl::StrFormat("%d or 56..%d in steps of 8", kDataRecordBaseSize,
                               sizeof(DataRecord))
             : absl::StrFormat("%d", expected)));
  }
  const bool is_hello = header.type == static_cast<uint16_t>(RecordType::kHello);
  if (!saw_hello_ && !is_hello) {
    return absl::InvalidArgumentError(
        absl::StrFormat("first record is of type %d, not a hello", header.type));
  }
  if (saw_hello_ && is_hello) {
    return absl::InvalidArgumentError(
        absl::StrFormat("record %d: a second hello on one connection", records_decoded_));
  }
  return absl::OkStatus();
}

absl::Status RecordDecoder::DecodeBody(const char* data, const RecordHeader& header,
                                       std::vector<Record>* out) {
  switch (static_cast<RecordType>(header.type)) {
    case RecordType::kHello: {
      HelloRecord hello;
      std::memcpy(&hello, data, sizeof(hello));
      absl::Status status = CheckHello(hello);
      if (!status.ok()) return status;
      saw_hello_ = true;
      out->emplace_back(hello);
      return absl::OkStatus();
    }
    // The two kinds every call makes are copied once, into their place in `out` (and taken
    // out again if they fail their check).
    case RecordType::kEvent: {
      auto& event = std::get<EventRecord>(out->emplace_back(std::in_place_type<EventRecord>));
      std::memcpy(&event, data, sizeof(event));
      absl::Status status = CheckEvent(event);
      if (!status.ok()) {
        out->pop_back();
        return absl::InvalidArgumentError(
            absl::StrFormat("record %d: %s", records_decoded_, status.message()));
      }
      return absl::OkStatus();
    }
    case RecordType::kData: {
      // Value-initialized: the bytes past its wire size are zero.
      auto& record = std::get<DataRecord>(out->emplace_back(std::in_place_type<DataRecord>));
      std::memcpy(&record, data, header.size);  // <= sizeof(DataRecord): RecordSizeValid
      absl::Status status = CheckData(record, header.size);
      if (!status.ok()) {
        out->pop_back();
        return absl::InvalidArgumentError(
            absl::StrFormat("record %d: %s", records_decoded_, status.message()));
      }
      return absl::OkStatus();
    }
    case RecordType::kInband: {
      InbandRecord inband;
      std::memcpy(&inband, data, sizeof(inband));
      absl::Status status = CheckInband(inband);
      if (!status.ok()) {
        return absl::InvalidArgumentError(
            absl::StrFormat("record %d: %s", records_decoded_, status.message()));
      }
      out->emplace_back(inband);
      return absl::OkStatus();
    }
    case RecordType::kStats: {
      StatsRecord stats;
      std::memcpy(&stats, data, sizeof(stats));
      out->emplace_back(stats);
      return absl::OkStatus();
    }
  }
  // CheckHeader() let only known types through.
  return absl::InternalError("unreachable record type");
}

size_t RecordDecoder::DecodeRecords(absl::string_view bytes, std::vector<Record>* out) {
  size_t pos = 0;
  while (bytes.size() - pos >= sizeof(RecordHeader)) {
    RecordHeader header;
    std::memcpy(&header, bytes.data() + pos, sizeof(header));
    absl::Status status = CheckHeader(header);
    if (status.ok()) {
      if (bytes.size() - pos < header.size) break;
      status = DecodeBody(bytes.data() + pos, header, out);
    }
    if (!status.ok()) {
      error_ = status;
      return pos;
    }
    pos += header.size;
    ++records_decoded_;
  }
  return pos;
}

absl::Status RecordDecoder::Feed(absl::string_view bytes, std::vector<Record>* out) {
  if (!error_.ok()) return error_;
  if (pending_.empty()) {
    // The common case (a ring's records come whole): decoded where they are, and only a
    // partial record at the end kept for the next call.
    const size_t used = DecodeRecords(bytes, out);
    if (!error_.ok()) return error_;
    if (used < bytes.size()) pending_.assign(bytes.data() + used, bytes.size() - used);
    return absl::OkStatus();
  }
  pending_.append(bytes.data(), bytes.size());
  const size_t used = DecodeRecords(pending_, out);
  if (!error_.ok()) {
    pending_.clear();
    return error_;
  }
  pending_.erase(0, used);
  return absl::OkStatus();
}

absl::Status RecordDecoder::Finish() const {
  if (!error_.ok()) return error_;
  if (!pending_.empty()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "truncated record: the stream ended %d bytes into record %d", pending_.size(),
        records_decoded_));
  }
  return absl::OkStatus();
}

}  // namespace reptrace
