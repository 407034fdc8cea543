// Parsing an ingest stream's messages without letting one bad span lose its batch.
//
// protobuf refuses a whole message when any string field holds bytes that are not
// UTF-8 (an HTTP path with raw bytes, a process name in Latin-1). An agent that sends
// such a batch would have it refused, resend it, and never get further. So a batch that
// does not parse is taken apart on the wire: the spans that parse are kept, the others
// dropped and counted.
#ifndef REPTRACE_CONTROLLER_INTERNAL_AGENT_MESSAGE_H_
#define REPTRACE_CONTROLLER_INTERNAL_AGENT_MESSAGE_H_

#include <string>

#include <google/protobuf/arena.h>

#include "absl/status/statusor.h"
#include "proto/reptrace.pb.h"

namespace reptrace::controller::internal {

struct ParsedAgentMessage {
  v1::AgentMessage* message = nullptr;  // on the arena given to ParseAgentMessage
  int spans_unparseable = 0;  // spans of a batch that were dropped because they did not parse
};

// Parses `bytes` into a message allocated on `arena` (a batch's hundreds of spans and
// their strings then cost a few block allocations, and freeing them one Reset); it lives
// until the arena is reset or destroyed. INVALID_ARGUMENT if `bytes` is not an
// AgentMessage and not a batch whose batch id can be read.
absl::StatusOr<ParsedAgentMessage> ParseAgentMessage(const std::string& bytes,
                                                     google::protobuf::Arena* arena);

}  // namespace reptrace::controller::internal

#endif  // REPTRACE_CONTROLLER_INTERNAL_AGENT_MESSAGE_H_
