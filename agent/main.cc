// reptrace-agent: collects the socket events of hooked processes on this node, turns them
// into spans and streams them to the controller.
#include <signal.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "agent/config_holder.h"
#include "agent/config_page_writer.h"
#include "agent/counter_set.h"
#include "agent/hook_server.h"
#include "agent/pod_directory.h"
#include "agent/span_buffer.h"
#include "agent/span_builder.h"
#include "agent/uploader.h"
#include "common/flags_usage.h"
#include "common/log.h"

ABSL_FLAG(std::string, socket, "/run/reptrace/agent.sock",
          "Unix socket the hooked processes connect to");
ABSL_FLAG(std::string, controller, "127.0.0.1:7070", "reptrace-controller address, host:port");
ABSL_FLAG(std::string, node, "", "node name put in every span (default: the hostname)");
ABSL_FLAG(int64_t, buffer_spans, 100000,
          "most spans held while not acknowledged by the controller; more are dropped");
ABSL_FLAG(int64_t, buffer_mib, 32,
          "most memory (MiB) the spans held for the controller may take; more are dropped");
ABSL_FLAG(int64_t, batch_max_spans, 500, "most spans in one batch");
ABSL_FLAG(int64_t, batch_interval_ms, 200, "a non-empty batch is sent at least this often");
ABSL_FLAG(std::string, kube_api_server, "auto",
          "Kubernetes API server that names the pods of this node's spans (https://HOST:PORT); "
          "auto: the cluster's own when the agent runs in a pod (KUBERNETES_SERVICE_HOST), "
          "else none; off: none. Without one, spans still carry their container id and pod "
          "uid (from cgroups)");
ABSL_FLAG(std::string, kube_token_file, reptrace::PodDirectory::kServiceAccountToken,
          "bearer token for the API server (read again for every request)");
ABSL_FLAG(std::string, kube_ca_file, reptrace::PodDirectory::kServiceAccountCa,
          "CA certificates the API server's certificate must chain to");
ABSL_FLAG(int64_t, kube_refresh_seconds, 30,
          "the node's pods are listed this often, and within a second of a span from a pod "
          "not yet listed");

namespace reptrace {
namespace {

constexpr absl::Duration kFinalFlushTimeout = absl::Seconds(2);

std::string Hostname() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "unknown";
  return name;
}

// absl flags know --buffer_spans; the documented spelling is --buffer-spans.
std::vector<char*> DashesToUnderscores(int argc, char** argv, std::vector<std::string>* store) {
  store->reserve(argc);
  std::vector<char*> out;
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (i > 0 && arg.size() > 2 && arg.compare(0, 2, "--") == 0) {
      const size_t end = std::min(arg.find('='), arg.size());
      for (size_t j = 2; j < end; ++j) {
        if (arg[j] == '-') arg[j] = '_';
      }
    }
    store->push_back(std::move(arg));
    out.push_back(store->back().data());
  }
  return out;
}

int Run(int argc, char** argv) {
  SetLogComponent("agent");
  ConfigureFlagsUsage(
      "reptrace-agent --socket PATH --controller HOST:PORT [--node NAME] [--buffer-spans N]"
      " [--buffer-mib N] [--batch-max-spans N] [--batch-interval-ms N]\n"
      "      [--kube-api-server auto|off|https://HOST:PORT] [--kube-token-file F]"
      " [--kube-ca-file F]\n"
      "Collects the socket events of hooked processes on this node, builds spans and\n"
      "streams them to reptrace-controller. Publishes the trace config the controller\n"
      "pushes to every hooked process through the file PATH.config (mapped read-only by\n"
      "each of them). Spans of processes in containers carry their container id and, in\n"
      "Kubernetes, their pod's uid, name and namespace and their container's name.\n"
      "Flags may be spelt with - or _.");
  std::vector<std::string> arg_store;
  std::vector<char*> args = DashesToUnderscores(argc, argv, &arg_store);
  absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  // Debian's Abseil is built without NDEBUG, so every Mutex lock and unlock also looks the
  // mutex up in a global lock-order graph to find deadlock cycles: in a release agent that
  // was about 300 instructions per span (SpanBuffer::Add locks once per span, in the hook
  // server's loop). The tests, on the same library, keep the checking on.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);

  const std::string hostname = Hostname();
  std::string node = absl::GetFlag(FLAGS_node);
  if (node.empty()) node = hostname;
  const std::string controller = absl::GetFlag(FLAGS_controller);
  const std::string socket_path = absl::GetFlag(FLAGS_socket);
  SpanBufferOptions buffer_options;
  if (absl::GetFlag(FLAGS_buffer_spans) < 1 || absl::GetFlag(FLAGS_buffer_mib) < 1 ||
      absl::GetFlag(FLAGS_batch_max_spans) < 1 || absl::GetFlag(FLAGS_batch_interval_ms) < 1) {
    LogError(
        "--buffer-spans, --buffer-mib, --batch-max-spans and --batch-interval-ms must be "
        "positive");
    return 2;
  }
  buffer_options.max_spans = static_cast<size_t>(absl::GetFlag(FLAGS_buffer_spans));
  buffer_options.max_bytes = static_cast<size_t>(absl::GetFlag(FLAGS_buffer_mib)) << 20;
  buffer_options.batch_max_spans = static_cast<size_t>(absl::GetFlag(FLAGS_batch_max_spans));
  buffer_options.batch_interval = absl::Milliseconds(absl::GetFlag(FLAGS_batch_interval_ms));
  if (absl::GetFlag(FLAGS_kube_refresh_seconds) < 1) {
    LogError("--kube-refresh-seconds must be positive");
    return 2;
  }

  // Pod names for the spans of this node's pods (agent/pod_directory.h).
  std::string kube_api_server = absl::GetFlag(FLAGS_kube_api_server);
  if (kube_api_server == "auto") {
    absl::StatusOr<std::string> in_cluster = PodDirectory::InClusterApiServer();
    kube_api_server = in_cluster.ok() ? *in_cluster : "";
  } else if (kube_api_server == "off") {
    kube_api_server.clear();
  } else if (!absl::StartsWith(kube_api_server, "https://") &&
             !absl::StartsWith(kube_api_server, "http://")) {
    LogError("--kube-api-server must be auto, off or an https:// (or http://, e.g. kubectl proxy) URL, not \"%s\"",
             kube_api_server);
    return 2;
  }
  std::unique_ptr<PodDirectory> pods;
  if (!kube_api_server.empty()) {
    PodDirectory::Options pod_options;
    pod_options.api_server = kube_api_server;
    pod_options.token_file = absl::GetFlag(FLAGS_kube_token_file);
    pod_options.ca_file = absl::GetFlag(FLAGS_kube_ca_file);
    pod_options.node = node;
    pod_options.refresh_interval = absl::Seconds(absl::GetFlag(FLAGS_kube_refresh_seconds));
    absl::StatusOr<std::unique_ptr<PodDirectory>> started = PodDirectory::Start(pod_options);
    if (!started.ok()) {
      LogError("cannot name pods: %s", started.status().ToString());
      return 1;
    }
    pods = std::move(*started);
  }

  // Signals are taken synchronously by this thread; every thread started below inherits
  // the mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  CounterSet counters;
  SpanBuffer buffer(buffer_options, &counters);
  SpanBuilder builder(node, [&](const SpanRecord& span) {
    counters.spans_built.fetch_add(1);
    buffer.Add(span, absl::Now());
  });
  if (pods != nullptr) {
    builder.SetWorkloadNamer([&pods](Workload* workload) { return pods->Name(workload); });
  }
  HookServer hook_server(socket_path, &builder, &counters);
  if (absl::Status status = hook_server.Start(); !status.ok()) {
    LogError("cannot listen on %s: %s", socket_path, status.ToString());
    return 1;
  }
  UploaderOptions uploader_options;
  uploader_options.controller = controller;
  uploader_options.node = node;
  uploader_options.agent_id = NewAgentId();
  uploader_options.hostname = hostname;
  // The config the controller pushes, published to the hooked processes through the
  // config page next to the socket (created with its directory by the hook server).
  absl::StatusOr<std::unique_ptr<ConfigPageWriter>> page =
      ConfigPageWriter::Open(ConfigPagePath(socket_path), node);
  if (!page.ok()) {
    LogError("cannot publish the config page: %s", page.status().ToString());
    return 1;
  }
  ConfigHolder config(page->get());
  Uploader uploader(uploader_options, &buffer, &counters, &config);
  uploader.Start();
  LogInfo("agent %s node %s listening on %s, controller %s, config page %s (version %d), "
          "pod names %s",
          uploader_options.agent_id, node, socket_path, controller, (*page)->path(),
          (*page)->version(),
          kube_api_server.empty() ? std::string("off (container ids and pod uids only)")
                                  : absl::StrCat("from ", kube_api_server));

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  LogInfo("%s: stopping", strsignal(signal_number));
  hook_server.Stop();  // finishes the open spans of every hooked process
  uploader.Stop(kFinalFlushTimeout);
  const v1::AgentCounters c = counters.Snapshot();
  LogInfo("stopped: %d events, %d spans built, %d dropped, %d batches sent, %d acked, "
          "%d spans not delivered, %d events without a connection, %d in-band peers not "
          "hooked, %d events rate-limited in the hooks",
          c.events_received(), c.spans_built(), c.spans_dropped(), c.batches_sent(),
          c.batches_acked(), buffer.spans_held(), c.events_without_connection(),
          c.inband_peers_not_hooked(), c.hook_events_rate_limited());
  return 0;
}

}  // namespace
}  // namespace reptrace

int main(int argc, char** argv) { return reptrace::Run(argc, argv); }
