// The agent's counters since it started (proto AgentCounters), shared by its threads.
#ifndef REPTRACE_AGENT_COUNTER_SET_H_
#define REPTRACE_AGENT_COUNTER_SET_H_

#include <atomic>
#include <cstdint>

#include "proto/reptrace.pb.h"

namespace reptrace {

struct CounterSet {
  std::atomic<uint64_t> processes_connected{0};
  std::atomic<uint64_t> events_received{0};
  std::atomic<uint64_t> records_malformed{0};
  std::atomic<uint64_t> hook_events_dropped{0};
  std::atomic<uint64_t> spans_built{0};
  std::atomic<uint64_t> spans_dropped{0};
  std::atomic<uint64_t> batches_sent{0};
  std::atomic<uint64_t> batches_acked{0};
  std::atomic<uint64_t> batches_resent{0};
  std::atomic<uint64_t> events_without_connection{0};  // copied from the SpanBuilder
  std::atomic<uint64_t> inband_peers_not_hooked{0};    // copied from the SpanBuilder
  std::atomic<uint64_t> hook_events_rate_limited{0};

  v1::AgentCounters Snapshot() const {
    v1::AgentCounters c;
    c.set_processes_connected(processes_connected.load());
    c.set_events_received(events_received.load());
    c.set_records_malformed(records_malformed.load());
    c.set_hook_events_dropped(hook_events_dropped.load());
    c.set_spans_built(spans_built.load());
    c.set_spans_dropped(spans_dropped.load());
    c.set_batches_sent(batches_sent.load());
    c.set_batches_acked(batches_acked.load());
    c.set_batches_resent(batches_resent.load());
    c.set_events_without_connection(events_without_connection.load());
    c.set_inband_peers_not_hooked(inband_peers_not_hooked.load());
    c.set_hook_events_rate_limited(hook_events_rate_limited.load());
    return c;
  }
};

}  // namespace reptrace

#endif  // REPTRACE_AGENT_COUNTER_SET_H_
