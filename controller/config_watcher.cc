#include "controller/config_watcher.h"

#include <algorithm>
#include <exception>
#include <functional>
#include <string>
#include <utility>

#include <pqxx/pqxx>

#include "absl/strings/numbers.h"
#include "common/log.h"
#include "controller/internal/pg_util.h"
#include "controller/schema.h"

namespace reptrace::controller {
namespace {

constexpr absl::Duration kFirstBackOff = absl::Milliseconds(100);
constexpr absl::Duration kMaxBackOff = absl::Seconds(5);

// Hands each notification's version to `publish`.
class VersionReceiver final : public pqxx::notification_receiver {
 public:
  VersionReceiver(pqxx::connection_base& conn, std::function<void(uint64_t)> publish)
      : pqxx::notification_receiver(conn, kConfigChannel), publish_(std::move(publish)) {}

  void operator()(const std::string& payload, int) override {
    uint64_t version = 0;
    if (absl::SimpleAtoi(payload, &version)) {
      publish_(version);
    } else {
      LogWarning("ignored a %s notification with payload \"%s\"", kConfigChannel, payload);
    }
  }

 private:
  std::function<void(uint64_t)> publish_;
};

}  // namespace

ConfigWatcher::ConfigWatcher(std::string conninfo)
    : conninfo_(std::move(conninfo)), thread_([this] { Run(); }) {}

ConfigWatcher::~ConfigWatcher() { Stop(); }

uint64_t ConfigWatcher::version() const {
  absl::MutexLock lock(&mu_);
  return version_;
}

uint64_t ConfigWatcher::WaitNewerThan(uint64_t version, absl::Duration timeout) const {
  const absl::Time deadline = absl::Now() + timeout;
  absl::MutexLock lock(&mu_);
  while (version_ <= version && !stopped_) {
    if (changed_.WaitWithDeadline(&mu_, deadline)) break;  // timed out
  }
  return version_;
}

void ConfigWatcher::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopped_ = true;
    changed_.SignalAll();
  }
  if (thread_.joinable()) thread_.join();
}

bool ConfigWatcher::stopped() const {
  absl::MutexLock lock(&mu_);
  return stopped_;
}

void ConfigWatcher::Publish(uint64_t version) {
  absl::MutexLock lock(&mu_);
  if (version <= version_) return;
  version_ = version;
  changed_.SignalAll();
}

bool ConfigWatcher::SleepUnlessStopped(absl::Duration duration) {
  const absl::Time deadline = absl::Now() + duration;
  absl::MutexLock lock(&mu_);
  while (!stopped_) {
    if (changed_.WaitWithDeadline(&mu_, deadline)) break;
  }
  return !stopped_;
}

void ConfigWatcher::Run() {
  absl::Duration back_off = kFirstBackOff;
  bool failing = false;  // logged once per outage, not per attempt
  while (!stopped()) {
    try {
      pqxx::connection conn(conninfo_);
      {
        pqxx::nontransaction tx(conn);
        tx.exec_params("SELECT set_config('application_name', $1, false)",
                       kApplicationName);
      }
      VersionReceiver receiver(conn, [this](uint64_t version) { Publish(version); });
      // LISTEN is in effect (the receiver's constructor ran it): anything committed from
      // now on is announced, and what was committed before is read here.
      {
        pqxx::read_transaction tx(conn);
        const pqxx::row row = tx.exec1(
            std::string("SELECT coalesce(max(version), 0) FROM ") + kConfigVersionsTable);
        Publish(internal::FromBigint(row[0].as<int64_t>()));
        tx.commit();
      }
      if (failing) LogInfo("config watcher: listening again on %s", kConfigChannel);
      failing = false;
      back_off = kFirstBackOff;
      while (!stopped()) {
        conn.await_notification(0, absl::ToInt64Microseconds(kPollStop));
        if (!conn.is_open()) throw pqxx::broken_connection("connection lost");
      }
    } catch (const std::exception& e) {
      if (!failing) {
        LogWarning("config watcher: %s; reconnecting",
                   internal::OneLine(e.what()));
      }
      failing = true;
      if (!SleepUnlessStopped(back_off)) return;
      back_off = std::min(back_off * 2, kMaxBackOff);
    }
  }
}

}  // namespace reptrace::controller
