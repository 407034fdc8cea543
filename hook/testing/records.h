// Helpers shared by the tests of libreptrace.so (hook_test.cc, tls_test.cc): how a hooked
// child is started, and look-ups over the records a FakeAgent decoded.
#ifndef REPTRACE_HOOK_TESTING_RECORDS_H_
#define REPTRACE_HOOK_TESTING_RECORDS_H_

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "common/event_record.h"
#include "hook/testing/fake_agent.h"
#include "tests/testing/process.h"

extern char** environ;

namespace reptrace::testing {

// Environment variables for a child: name -> value.
using Env = std::map<std::string, std::string>;

// How a child runs: our environment without any LD_PRELOAD or REPTRACE_*, plus `extra`;
// stdout goes to `stdout_path`, stderr stays ours (it shows in the test's log).
inline ProcessOptions ChildOptions(const Env& extra,
                                   const std::string& stdout_path = "/dev/null") {
  ProcessOptions options;
  options.unset_env.push_back("LD_PRELOAD");
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string var = *e;
    if (var.rfind("REPTRACE_", 0) == 0) options.unset_env.push_back(var.substr(0, var.find('=')));
  }
  options.env = extra;
  options.stdout_path = stdout_path;
  options.stderr_path = "";
  return options;
}

inline std::string CaptureOf(const EventRecord& e) {
  return std::string(reinterpret_cast<const char*>(e.capture), e.capture_len);
}

// A NUL-padded name field of a HelloRecord (service, process).
inline std::string NameOf(const char (&name)[kNameBytes]) {
  return std::string(name, strnlen(name, kNameBytes));
}

// The stream's events of `kind`, on connection `conn_id` (conn ids are never 0; 0: any).
// Re-announcements (kFlagReannounce) of connections are not connects or accepts: they are
// left out unless `reannounced`, which gives only them.
inline std::vector<EventRecord> EventsOf(const AgentStream& stream, EventKind kind,
                                         uint64_t conn_id = 0, bool reannounced = false) {
  std::vector<EventRecord> out;
  for (const auto& e : stream.events) {
    const bool opens = e.kind == static_cast<uint8_t>(EventKind::kConnect) ||
                       e.kind == static_cast<uint8_t>(EventKind::kAccept);
    if (opens && ((e.flags & kFlagReannounce) != 0) != reannounced) continue;
    if (e.kind == static_cast<uint8_t>(kind) && (conn_id == 0 || e.conn_id == conn_id)) {
      out.push_back(e);
    }
  }
  return out;
}

// The bytes moved in one direction: checks the offsets are contiguous from 0 and returns
// the total.
inline uint64_t ContiguousTotal(const std::vector<EventRecord>& transfers, const char* what) {
  uint64_t total = 0;
  for (const auto& e : transfers) {
    if (e.result <= 0) continue;
    EXPECT_EQ(e.offset, total) << what;
    total += static_cast<uint64_t>(e.result);
  }
  return total;
}

// Where a message starts in one direction of a connection, as the hook recorded it.
struct MessageStart {
  uint64_t offset;
  std::string capture;
  uint64_t hash;
  bool operator==(const MessageStart& o) const {
    return offset == o.offset && capture == o.capture && hash == o.hash;
  }
};

inline std::vector<MessageStart> MessageStarts(const std::vector<EventRecord>& transfers) {
  std::vector<MessageStart> out;
  for (const auto& e : transfers) {
    if (e.flags & kFlagMessageStart) out.push_back({e.offset, CaptureOf(e), e.hash});
  }
  return out;
}

}  // namespace reptrace::testing

#endif  // REPTRACE_HOOK_TESTING_RECORDS_H_
