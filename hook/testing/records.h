// Helpers shared by the tests of libreptrace.so (hook_test.cc, tls_test.cc,
// inband_hook_test.cc): how a hooked child is started, and look-ups over the records a
// FakeAgent decoded.
#ifndef REPTRACE_HOOK_TESTING_RECORDS_H_
#define REPTRACE_HOOK_TESTING_RECORDS_H_

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "absl/time/time.h"
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

// A fresh directory, removed with everything in it.
class TempDir {
 public:
  TempDir() : path_(MakeTempDir("reptrace-hook-test")) {}
  ~TempDir() { RemoveTree(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string File(const std::string& name, const std::string& content) const {
    const std::string p = path_ + "/" + name;
    std::ofstream(p) << content;
    return p;
  }

 private:
  std::string path_;
};

#ifdef REPTRACE_HOOK_PATH
// The environment of a child under the hook, its records going to `socket_path`.
inline Env HookEnv(const std::string& socket_path, const Env& extra = {}) {
  Env env = {{"LD_PRELOAD", REPTRACE_HOOK_PATH}, {"REPTRACE_SOCKET", socket_path}};
  env.insert(extra.begin(), extra.end());
  return env;
}
#endif

// A child process whose stdout (a file) we read while it runs; stopped on destruction.
class Child {
 public:
  Child(const std::vector<std::string>& argv, const Env& env)
      : dir_(MakeTempDir("reptrace-hook-test-child")), stdout_path_(dir_ + "/stdout") {
    process_ = Process(argv, ChildOptions(env, stdout_path_));
  }
  ~Child() {
    process_ = Process();  // stops it
    RemoveTree(dir_);
  }
  pid_t pid() const { return process_.pid(); }

  // Its first line of output ("" if it exits without one or the time-out passes).
  std::string ReadLine(absl::Duration timeout) {
    return WaitForLine(process_, stdout_path_, "", timeout);
  }

  // Everything it has printed so far.
  std::string Output() const {
    std::ifstream in(stdout_path_);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }

  // Waits for exit; the exit status, 128 + signal, or -1 on timeout.
  int Wait(absl::Duration timeout) { return process_.Wait(timeout).value_or(-1); }
  // Stops it (as the destructor does) and waits for it.
  void Stop() { process_ = Process(); }

 private:
  const std::string dir_;
  const std::string stdout_path_;
  Process process_;
};

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
