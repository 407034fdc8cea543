// Streams the agent's span batches to the controller over one long-lived
// IngestService.Connect stream (insecure channel).
//
// On each stream: an AgentHello first, then every batch the SpanBuffer hands out (with the
// current counters attached), and AgentCounters on their own every `counters_interval`.
// A reader thread removes acknowledged batches from the buffer, and puts each config the
// controller pushes (ControllerMessage.config: the current one right after the hello, then
// every change) into the ConfigHolder; the sending thread then answers ConfigApplied with
// its version. The config is only held, not yet applied to the hooks (a later change). On any stream failure the
// uploader logs one line, backs off (initial_backoff doubling up to max_backoff),
// reconnects and resends every unacknowledged batch in order.
#ifndef REPTRACE_AGENT_UPLOADER_H_
#define REPTRACE_AGENT_UPLOADER_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include <grpcpp/support/byte_buffer.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/config_holder.h"
#include "agent/counter_set.h"
#include "agent/span_buffer.h"
#include "proto/reptrace.grpc.pb.h"

namespace grpc {
class ClientContext;
}  // namespace grpc

namespace reptrace {

struct UploaderOptions {
  std::string controller;  // host:port
  std::string node;
  std::string agent_id;    // NewAgentId()
  std::string hostname;
  absl::Duration counters_interval = absl::Seconds(5);
  absl::Duration initial_backoff = absl::Milliseconds(100);
  absl::Duration max_backoff = absl::Seconds(5);
};

// The message that sends `batch` with `counters`: the bytes of an AgentMessage whose `batch`
// field is ToSpanBatch(*batch) with its counters set. The batch's own bytes are not copied:
// the message refers to them, and keeps `batch` alive for as long as it (or a copy gRPC
// took of it) does.
grpc::ByteBuffer BatchMessage(std::shared_ptr<const SealedBatch> batch,
                              const v1::AgentCounters& counters);

// A random UUID (libuuid), lower-case: the id of this agent process.
std::string NewAgentId();

class Uploader {
 public:
  // `buffer`, `counters` and `config` must outlive the uploader.
  Uploader(UploaderOptions options, SpanBuffer* buffer, CounterSet* counters,
           ConfigHolder* config);
  Uploader(const Uploader&) = delete;
  Uploader& operator=(const Uploader&) = delete;
  ~Uploader();  // Stop(absl::ZeroDuration()) if still running

  void Start();
  // Seals the open batch, keeps sending until every batch is acknowledged or
  // `flush_timeout` has passed, then closes the stream and joins the threads.
  void Stop(absl::Duration flush_timeout);

  bool connected() const { return connected_.load(); }
  uint64_t streams_opened() const { return streams_opened_.load(); }

 private:
  // Runs one stream until it fails (returns its error) or the uploader is done (OK).
  absl::Status RunStream();
  bool Done() const;  // stop requested and (buffer empty or flush deadline passed)
  void SleepUnlessStopping(absl::Duration d);

  const UploaderOptions options_;
  SpanBuffer* const buffer_;
  CounterSet* const counters_;
  ConfigHolder* const config_;
  std::thread thread_;
  std::atomic<bool> connected_{false};
  std::atomic<uint64_t> streams_opened_{0};

  mutable absl::Mutex mu_;
  absl::CondVar stop_cv_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time flush_deadline_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  grpc::ClientContext* current_context_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace reptrace

#endif  // REPTRACE_AGENT_UPLOADER_H_
