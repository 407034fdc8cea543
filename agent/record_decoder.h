// Decodes the byte stream one hooked process writes to the agent's Unix socket
// (common/event_record.h) into whole, validated records. Pure: no I/O, no clock.
#ifndef REPTRACE_AGENT_RECORD_DECODER_H_
#define REPTRACE_AGENT_RECORD_DECODER_H_

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "common/event_record.h"

namespace reptrace {

// A DataRecord is handed out in its in-memory form: the bytes past its wire size zeroed.
using Record =
    std::variant<HelloRecord, EventRecord, DataRecord, StatsRecord, InbandRecord>;

// One decoder per hooked-process connection. Feed it the bytes as they arrive, in any
// segmentation. Records are checked before they are handed out:
//   - every header: magic, known type, a size the type allows (RecordSizeValid);
//   - the first record is a HelloRecord of wire version 2 to kWireVersion (4), with no
//     flag but kHelloFlagRing from version 3 on, and no other Hello follows it;
//   - HelloRecord names are NUL-terminated;
//   - EventRecord: known kind and role, family 4 or 6, capture_len <= kCaptureBytes;
//   - DataRecord: kind kSend or kRecv, no flag but kFlagMessageStart, capture_len 0 unless
//     a message starts, <= kCaptureBytes, and a size of exactly
//     DataRecordWireSize(flags, capture_len);
//   - InbandRecord: a known event (kSent, kReceived, kPeerNotHooked), reserved bytes zero,
//     and a non-zero span_id for kSent and kReceived (the id a span is given or named
//     by). Not tied to the hello's version: a version 2 or 3 hook never sends one.
// The first violation is an InvalidArgument error, and the decoder stays failed: the
// caller is expected to close the connection.
class RecordDecoder {
 public:
  RecordDecoder() = default;
  RecordDecoder(const RecordDecoder&) = delete;
  RecordDecoder& operator=(const RecordDecoder&) = delete;

  // Appends the whole records completed by `bytes` to `out` (also those that precede a bad
  // record), and returns the error of the first bad record, if any.
  absl::Status Feed(absl::string_view bytes, std::vector<Record>* out);

  // The stream ended. An error if it failed earlier or a partial record is left over
  // ("truncated record").
  absl::Status Finish() const;

  bool saw_hello() const { return saw_hello_; }
  uint64_t records_decoded() const { return records_decoded_; }

 private:
  absl::Status CheckHeader(const RecordHeader& header) const;
  // Decodes the whole records at the start of `bytes` into `out`; returns the bytes they
  // took. Sets error_ at the first bad record (and stops there).
  size_t DecodeRecords(absl::string_view bytes, std::vector<Record>* out);
  absl::Status DecodeBody(const char* data, const RecordHeader& header,
                          std::vector<Record>* out);

  std::string pending_;  // bytes of a record not yet complete
  bool saw_hello_ = false;
  uint64_t records_decoded_ = 0;
  absl::Status error_;
};

}  // namespace reptrace

#endif  // REPTRACE_AGENT_RECORD_DECODER_H_
