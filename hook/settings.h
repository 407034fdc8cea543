// What the hook traces, live: the agent's config page (common/config_page.h) as this process
// reads it, merged with the process's own environment.
//
// The page is mapped read-only from $REPTRACE_SOCKET.config when the process first starts
// tracing a connection, and again (at most once a second, on a new connection) while it is
// not there. Until then the process follows a default page of its own: everything traced,
// as before there was a config. Once mapped, it follows every version the agent writes: the
// hot path compares the page's seq with the one a connection was last decided under (two
// loads), and only when they differ decides again (ConnectionReporting's slow path:
// the connection's filters, and the process-wide values below, read with the seqlock
// protocol; a page being written keeps the previous decision until the next call).
//
// Every TCP connection stays in the ConnectionTable whatever the config says, counting its
// bytes: frames are stripped on every server connection, and a connection switched on
// again reports correct stream offsets. A connection not reporting costs its table look-up,
// the seq compare and the byte count; it makes no record and reads no clock.
//
// The environment still counts: REPTRACE_CAPTURE_BYTES caps what the page asks for (a
// process may keep less), REPTRACE_TRACE_UNIX and REPTRACE_INBAND_PORTS add to it (a process
// may opt in on its own).
#ifndef REPTRACE_HOOK_SETTINGS_H_
#define REPTRACE_HOOK_SETTINGS_H_

#include <atomic>
#include <cstdint>

#include "common/config_page.h"
#include "hook/connection_table.h"

namespace reptrace::hook {

namespace settings_internal {
extern std::atomic<const ConfigPage*> g_page;
extern std::atomic<uint8_t> g_capture_bytes;
extern std::atomic<uint64_t> g_event_interval_ns;  // 0: no rate limit
bool Refresh(ConnectionState* state);
bool TakeTokenSlow(uint64_t now_ns, uint64_t interval_ns);
}  // namespace settings_internal

// Library constructor: the page's path and the environment's settings.
void ConfigureSettings(uint8_t env_capture_bytes, bool env_trace_unix);
// The fork child keeps the parent's mapping (MAP_SHARED: the same page) and settings.

// Slow path, before a new connection is decided: maps the page if it is not mapped yet and
// the last try was over a second ago. `now_ns`: CLOCK_MONOTONIC.
void MaybeMapConfigPage(uint64_t now_ns);

// Whether `state` reports (makes records) under the current config; decides it again if
// the page changed since it was last decided.
inline bool ConnectionReporting(ConnectionState* state) {
  using namespace settings_internal;  // NOLINT: names of this file
  const uint64_t seq = g_page.load(std::memory_order_acquire)->seq.load(std::memory_order_relaxed);
  if (state->config_seq.load(std::memory_order_relaxed) == seq) {
    return state->reporting.load(std::memory_order_relaxed) != 0;
  }
  return Refresh(state);
}

// Whether `state` was decided not reporting under the page's current seq: loads only, no
// call (a connection to decide again answers false; its traced path decides it).
inline bool KnownNotReporting(const ConnectionState* state) {
  using namespace settings_internal;  // NOLINT: names of this file
  const uint64_t seq = g_page.load(std::memory_order_acquire)->seq.load(std::memory_order_relaxed);
  return state->config_seq.load(std::memory_order_relaxed) == seq &&
         state->reporting.load(std::memory_order_relaxed) == 0;
}

// Decides a new connection of `role` between `endpoints` (before its open record): whether
// it reports, in `*traced`; returns the page seq it was decided under, 0 if the page was
// being written (then `*traced` is false and the connection is decided on its next call).
uint64_t DecideNewConnection(uint8_t role, const Endpoints& endpoints, bool* traced);

// Whether a new connection of this process may be traced at all: Unix-domain sockets only
// when the page or REPTRACE_TRACE_UNIX asks.
bool TraceUnixSockets();
// Whether `port` is in the page's in-band ranges (hook/inband_calls.h adds
// REPTRACE_INBAND_PORTS).
bool PageInbandPort(uint16_t port);

// Capture bytes per message start: min(page, REPTRACE_CAPTURE_BYTES).
inline uint8_t CaptureBytes() {
  return settings_internal::g_capture_bytes.load(std::memory_order_relaxed);
}

// The max_events_per_second token bucket (a GCRA: one atomic holding the theoretical
// arrival time, a burst of one second's worth of events): whether a data record at `now_ns`
// may be made. Lock-free; written by hand because nothing in libc does it and the hook links
// nothing else.
inline bool TakeEventToken(uint64_t now_ns) {
  const uint64_t interval =
      settings_internal::g_event_interval_ns.load(std::memory_order_relaxed);
  return interval == 0 || settings_internal::TakeTokenSlow(now_ns, interval);
}


}  // namespace reptrace::hook

#endif  // REPTRACE_HOOK_SETTINGS_H_
