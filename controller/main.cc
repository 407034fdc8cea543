// reptrace-controller: receives span batches from the agents, links them into traces in
// PostgreSQL, answers queries, and keeps the config document (ConfigService).
//
//   reptrace-controller --listen HOST:PORT --db CONNINFO
#include <signal.h>

#include <cstdlib>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/log.h"
#include "common/flags_usage.h"
#include "common/version.h"
#include "controller/controller_server.h"
#include "controller/store.h"

namespace {

std::string DefaultDb() {
  const char* db = std::getenv("REPTRACE_DB");
  return db != nullptr && *db != '\0' ? db : "dbname=reptrace";
}

}  // namespace

ABSL_FLAG(std::string, listen, "0.0.0.0:7070",
          "HOST:PORT to serve gRPC on; port 0 picks a free port");
ABSL_FLAG(std::string, db, DefaultDb(),
          "libpq connection string of the PostgreSQL database (default: $REPTRACE_DB, "
          "else \"dbname=reptrace\")");

ABSL_FLAG(absl::Duration, sampling_decision_wait,
          reptrace::controller::ControllerServer::kDefaultSamplingDecisionWait,
          "trace sampling (config sampling.*) keeps or drops a trace once no span has been "
          "added to it or relinked into it for this long: spans are stored and linked as "
          "they come, and a dropped trace is then deleted whole. It must be longer than "
          "the time over which one trace's spans reach the controllers: the agents' batch "
          "interval (200ms by default) plus the longest time a request still runs after "
          "its last call out (a span is sent when it ends); a trace still growing after "
          "it is decided in parts. Longer costs nothing but the time dropped traces "
          "stay visible");

constexpr absl::Duration kShutdownGrace = absl::Seconds(5);

int main(int argc, char** argv) {
  reptrace::ConfigureFlagsUsage(
      "reptrace-controller --listen HOST:PORT --db CONNINFO\n"
      "Stores the agents' spans in PostgreSQL, links them into traces, samples them\n"
      "(config sampling.*), serves queries and the config document.");
  absl::ParseCommandLine(argc, argv);
  reptrace::SetLogComponent("controller");

  // libpq waits forever for an unreachable host unless told otherwise.
  setenv("PGCONNECT_TIMEOUT", "10", /*overwrite=*/0);

  // Block the stop signals in every thread (gRPC's threads inherit this mask); one
  // thread waits for them, from before the database is reached so that a stop request
  // during start-up is honoured too.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  static absl::Mutex mu;
  static reptrace::controller::ControllerServer* running ABSL_GUARDED_BY(mu) = nullptr;
  std::thread([stop_signals] {
    int signal_number = 0;
    sigwait(&stop_signals, &signal_number);
    reptrace::LogInfo("received %s, shutting down",
                      signal_number == SIGTERM ? "SIGTERM" : "SIGINT");
    absl::MutexLock lock(&mu);
    if (running == nullptr) std::_Exit(0);  // not serving yet: nothing to drain
    running->Shutdown(kShutdownGrace);
  }).detach();

  if (absl::GetFlag(FLAGS_sampling_decision_wait) <= absl::ZeroDuration()) {
    reptrace::LogError("--sampling_decision_wait must be positive");
    return 1;
  }
  auto store = reptrace::controller::Store::Open(absl::GetFlag(FLAGS_db));
  if (!store.ok()) {
    reptrace::LogError("%s", store.status().message());
    return 1;
  }
  auto server =
      reptrace::controller::ControllerServer::Start(absl::GetFlag(FLAGS_listen), **store,
                                                    absl::GetFlag(FLAGS_sampling_decision_wait));
  if (!server.ok()) {
    reptrace::LogError("%s", server.status().message());
    return 1;
  }
  {
    absl::MutexLock lock(&mu);
    running = server->get();
  }
  reptrace::LogInfo("reptrace-controller %s listening on %s", reptrace::kVersion,
                    (*server)->address());
  (*server)->Wait();
  {
    // Taken once the signal thread's Shutdown call has returned.
    absl::MutexLock lock(&mu);
    running = nullptr;
  }
  reptrace::LogInfo("stopped");
  return 0;
}
