// ConfigWatcher: the newest config version, as announced by PostgreSQL to this replica.
//
// Every config change, on any controller replica sharing the database, NOTIFYs
// kConfigChannel with its version when it commits (Store::SetConfig). A ConfigWatcher owns
// one dedicated connection that LISTENs on that channel, on its own thread, and publishes
// the highest version it has heard of to any number of waiters. It does not poll the
// table: it reads the newest version once after each (re)connection, because
// notifications sent while it was not listening are lost, and otherwise only listens.
//
// A broken connection is reopened with back-off (100 ms doubling to 5 s); a database that
// is down at start-up is retried the same way. Thread-safe.
#ifndef REPTRACE_CONTROLLER_CONFIG_WATCHER_H_
#define REPTRACE_CONTROLLER_CONFIG_WATCHER_H_

#include <cstdint>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace reptrace::controller {

class ConfigWatcher {
 public:
  // The listening connection's application_name (pg_stat_activity shows it).
  static constexpr char kApplicationName[] = "reptrace-controller config watcher";

  // Starts listening on a new connection to `conninfo` (a libpq connection string).
  explicit ConfigWatcher(std::string conninfo);
  ~ConfigWatcher();  // Stop()
  ConfigWatcher(const ConfigWatcher&) = delete;
  ConfigWatcher& operator=(const ConfigWatcher&) = delete;

  // The newest version heard of; 0 before the first connection has read it.
  uint64_t version() const;

  // Waits until the newest version is above `version`, Stop() is called, or `timeout`
  // passes; returns the newest version then (which is not above `version` on a timeout
  // or a stop).
  uint64_t WaitNewerThan(uint64_t version, absl::Duration timeout) const;

  // Ends the listening thread and wakes every waiter; later waits return at once.
  void Stop();
  bool stopped() const;

 private:
  void Run();
  // Raises the published version to `version` (never lowers it) and wakes the waiters.
  void Publish(uint64_t version);
  // Sleeps `duration` unless stopped first; false if stopped.
  bool SleepUnlessStopped(absl::Duration duration);

  // How long the listening thread blocks waiting for a notification before it checks
  // whether it should stop.
  static constexpr absl::Duration kPollStop = absl::Milliseconds(100);

  const std::string conninfo_;
  mutable absl::Mutex mu_;
  mutable absl::CondVar changed_;  // version_ raised, or stopped_ set
  uint64_t version_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace reptrace::controller

#endif  // REPTRACE_CONTROLLER_CONFIG_WATCHER_H_
