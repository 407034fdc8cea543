// TraceSampler: trace sampling (TraceConfig.sampling), decided in the controller, whole
// traces at a time, the same on every replica.
//
// The rules, in order (Sampling in proto/reptrace.proto; a sampling or probability left
// out means probability 1):
//   - keep_errors and a span of the trace failed (status ERROR): kept, reason "error";
//   - keep_slower_than_ms > 0 and the trace lasts at least that long (its first span's
//     start to its last span's end): kept, reason "slow";
//   - else kept with `probability`, decided by a hash of the trace id (KeptByProbability),
//     so every replica that decides a trace decides it the same: reason "probability",
//     kept or dropped.
//
// What "before storage" means here. Spans come from many agents, out of order, possibly
// to several controller replicas, and a trace is only whole once every node's spans have
// arrived and been linked (SpanLinker: a trace id can change when a late ancestor comes).
// No single replica sees a whole trace in memory (a buffer per replica would split traces
// across replicas, and decide on halves), so spans are written and linked as always, and
// a trace is decided once it has been quiet (no span added to it or relinked into it) for
// the decision wait, the controller flag --sampling_decision_wait. A dropped trace's spans
// and its summary row are then deleted in one transaction, so storage never keeps it:
// queries can see it only during its decision wait.
//
// Write path. While sampling is off (probability 1, the default: every trace is kept,
// whatever the keep rules say) writers do no bookkeeping at all (Store::SetSamplingOn).
// While it is on, each batch's transaction marks the traces it touched in
// sampling_pending with the time (one upsert per batch, under the link lock), which
// restarts their wait. The time is the writing replica's clock and the decider compares
// it with its own: replicas' clocks must agree to well within the wait (NTP does). Single-span traces (no row in traces) are marked by their span's
// id, which is their trace id, and decided the same way.
//
// Several replicas. Deciding takes the link lock (kLinkLockKey, pg_advisory_xact_lock),
// the one every writer holds while it links and marks, for the whole decision
// transaction. Chosen over FOR UPDATE SKIP LOCKED on the pending rows: a trace's
// membership is only stable under the link lock. Without it a writer could link a new
// span under a span being deleted (it would be left with a trace id whose root is gone),
// or mark a trace that has just been decided. With it, two replicas' deciders run one
// after the other and each sees the pending rows the other deleted (READ COMMITTED: a
// statement sees what committed before it started), so a trace is decided once and none
// is lost; a decision transaction is short (at most kMaxTracesPerTransaction traces,
// found through indexes) and is only taken when a cheap check without the lock found
// traces due. The counts (sampling_counts, one row per decision) are added to in the same
// transaction.
//
// Late spans. A span that arrives after its trace was decided is linked as usual and
// marks the trace it ends up in, which is decided again after its own wait:
//   - it joins a kept trace (same trace id): kept again (same hash, and errors and
//     duration only grow), and counted again: the counts are decisions, so a trace
//     decided twice counts twice;
//   - it is a late ancestor of a kept trace: the merged trace has the ancestor's id and is
//     decided as a whole by that id; if dropped, the spans kept before go too;
//   - its trace was dropped: its parent is gone, so it stands alone as a trace of its own
//     (a fragment), decided by its own id.
// A decision wait longer than the spread of a trace's arrival (agents batch for up to a
// second, and resend after a controller restart) keeps these rare.
//
// Config changes: traces already pending are decided by the rules current when they are
// decided; traces stored while sampling was off are never decided (kept). Each replica
// reads the config on its own (ConfigWatcher), so for a moment after a change replicas
// may disagree on whether to mark.
#ifndef REPTRACE_CONTROLLER_TRACE_SAMPLER_H_
#define REPTRACE_CONTROLLER_TRACE_SAMPLER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include <pqxx/pqxx>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controller/config_watcher.h"
#include "controller/store.h"
#include "proto/reptrace.pb.h"

namespace reptrace::controller {

// What one DecideQuietTraces call decided.
struct SamplingTally {
  struct Count {
    int64_t traces = 0;
    int64_t spans = 0;
  };
  Count kept_error, kept_slow, kept_probability, dropped_probability;
  int64_t vanished = 0;  // pending ids with no span left (merged into another trace)
};

class TraceSampler {
 public:
  // The decision stored in sampling_counts.decision.
  enum class Decision : int16_t {
    kKeptError = 1,
    kKeptSlow = 2,
    kKeptProbability = 3,
    kDroppedProbability = 4,
  };
  static constexpr int kMaxTracesPerTransaction = 500;

  // Whether `trace_id` is kept at `probability`: a 64-bit mix of the id compared with
  // the probability, the same everywhere. Below 0 keeps nothing, 1 or more everything.
  static bool KeptByProbability(uint64_t trace_id, double probability);

  // A sampler of `store`'s traces on its own connection; `decision_wait` is how long a
  // trace must have been quiet to be decided.
  static absl::StatusOr<std::unique_ptr<TraceSampler>> Create(Store& store,
                                                              absl::Duration decision_wait);
  ~TraceSampler();  // StopLoop()
  TraceSampler(const TraceSampler&) = delete;
  TraceSampler& operator=(const TraceSampler&) = delete;

  // The rules for the next decisions; turns the writers' bookkeeping on
  // (SamplingProbability(config) < 1) or off.
  void SetConfig(const v1::TraceConfig& config);

  // Decides every pending trace last touched at or before `now_ns` - decision wait, in
  // transactions of at most kMaxTracesPerTransaction traces. Thread-compatible: one call
  // at a time per sampler (several samplers may run at once on one database).
  absl::StatusOr<SamplingTally> DecideQuietTraces(int64_t now_ns);

  // Starts a thread that follows the config (`watcher` announces each change; the newest
  // version is then read from the store) and decides quiet traces every `tick`. The
  // config is read once before this returns (an error is logged and retried).
  void StartLoop(const ConfigWatcher& watcher, absl::Duration tick);
  void StopLoop();

  absl::Duration decision_wait() const { return decision_wait_; }

 private:
  TraceSampler(Store& store, absl::Duration decision_wait,
               std::unique_ptr<pqxx::connection> conn);
  // Reads the newest config from the store if `watcher` announced a newer one.
  void FollowConfig(const ConfigWatcher& watcher);
  // One transaction: up to kMaxTracesPerTransaction due traces decided. Returns how many
  // pending rows it settled (0: none was due). Throws pqxx exceptions.
  int DecideSome(int64_t due_ns, const v1::Sampling& sampling, double probability,
                 SamplingTally* tally);
  absl::Status Reconnect();

  Store& store_;
  const absl::Duration decision_wait_;
  std::unique_ptr<pqxx::connection> conn_;  // used by one thread at a time

  absl::Mutex mu_;
  v1::TraceConfig config_ ABSL_GUARDED_BY(mu_);
  uint64_t config_version_ = 0;  // the loop's thread only
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace reptrace::controller

#endif  // REPTRACE_CONTROLLER_TRACE_SAMPLER_H_
