// What the controller does with one agent's ingest stream, without the gRPC around it.
//
// Protocol: the first message must be a hello naming the agent (agent_id and node not
// empty). Then each batch is validated (malformed spans are dropped, counted in the
// agent's row and logged once per batch), stored with its links, and only then
// acknowledged; a batch stored before is acknowledged as a duplicate. Counters update the
// agent's row, and so does ConfigApplied (the config version the agent now holds, which
// ListAgents reports). Pushing the config to the agent is IngestService's part (it needs
// the stream). A database error ends the session with UNAVAILABLE: the agent reconnects
// and resends what was not acknowledged.
#ifndef REPTRACE_CONTROLLER_AGENT_SESSION_H_
#define REPTRACE_CONTROLLER_AGENT_SESSION_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "controller/store.h"
#include "proto/reptrace.pb.h"

namespace reptrace::controller {

class AgentSession {
 public:
  explicit AgentSession(Store& store) : store_(store) {}
  ~AgentSession();  // Finish() if it was not called
  AgentSession(const AgentSession&) = delete;
  AgentSession& operator=(const AgentSession&) = delete;

  // Handles the stream's first message. INVALID_ARGUMENT unless it is a hello with an
  // agent_id and a node; UNAVAILABLE if the database cannot be used.
  absl::Status Start(const v1::AgentMessage& first);

  // Handles a later message; returns the acknowledgement to send, if any.
  // `spans_unparseable`: spans already dropped from a batch because they did not parse;
  // counted with the ones validation drops. INVALID_ARGUMENT for a second hello or an
  // empty message, UNAVAILABLE on a database error. After an error the session is over.
  absl::StatusOr<std::optional<v1::BatchAck>> Handle(const v1::AgentMessage& message,
                                                     int spans_unparseable = 0);

  // Marks the agent disconnected (best effort: logs a failure).
  void Finish();

  const std::string& agent_id() const { return hello_.agent_id(); }

 private:
  absl::StatusOr<v1::BatchAck> HandleBatch(const v1::SpanBatch& batch, int spans_unparseable);

  Store& store_;
  v1::AgentHello hello_;
  int64_t connected_at_ns_ = 0;
  std::unique_ptr<SpanWriter> writer_;
  bool finished_ = false;
};

}  // namespace reptrace::controller

#endif  // REPTRACE_CONTROLLER_AGENT_SESSION_H_
