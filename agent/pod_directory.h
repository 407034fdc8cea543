// The pods of this node, by uid, as the Kubernetes API server lists them: what names the
// pod uid and container id that a process's cgroup gives (agent/workload.h).
//
// A background thread lists the node's pods (GET /api/v1/pods?fieldSelector=
// spec.nodeName=NODE, with the agent's service-account token) every refresh interval, and
// sooner when a span asks for a pod it does not know (a pod that just started), at most
// once per `min_interval`. Pods are listed, not watched: one request per interval per
// node is little for the API server, and a miss is answered within a second anyway.
// When the API server cannot be reached, spans keep their container id and pod uid and
// the failure is logged (at most once a minute while it lasts); the last list stays.
#ifndef REPTRACE_AGENT_POD_DIRECTORY_H_
#define REPTRACE_AGENT_POD_DIRECTORY_H_

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/workload.h"

namespace reptrace {

struct PodMeta {
  std::string uid;
  std::string name;
  std::string namespace_name;
  // (container id without its "containerd://"-like prefix, container name), for every
  // container, init container and ephemeral container that has started.
  std::vector<std::pair<std::string, std::string>> containers;
};

// The pods of a PodList (the API's JSON), or what the API said instead (a Status).
absl::StatusOr<std::vector<PodMeta>> ParsePodList(absl::string_view json);

class PodDirectory {
 public:
  struct Options {
    std::string api_server;  // "https://HOST:PORT"
    std::string token_file;  // read before every request: projected tokens rotate
    std::string ca_file;     // the API server's CA bundle; empty: the system's
    std::string node;        // lists only this node's pods
    absl::Duration refresh_interval = absl::Seconds(30);
    absl::Duration min_interval = absl::Seconds(1);
    absl::Duration request_timeout = absl::Seconds(10);
  };

  // The in-cluster API server, as every pod sees it (KUBERNETES_SERVICE_HOST and _PORT,
  // the service account's token and CA), or NotFound outside a cluster.
  static absl::StatusOr<std::string> InClusterApiServer();
  static constexpr const char* kServiceAccountToken =
      "/var/run/secrets/kubernetes.io/serviceaccount/token";
  static constexpr const char* kServiceAccountCa =
      "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";

  // Starts listing (the first list is made at once, in the background).
  static absl::StatusOr<std::unique_ptr<PodDirectory>> Start(Options options);
  PodDirectory(const PodDirectory&) = delete;
  PodDirectory& operator=(const PodDirectory&) = delete;
  ~PodDirectory();  // stops the thread (an ongoing request is abandoned within a second)

  // Fills `workload`'s pod name, namespace and container name if its pod is known; asks
  // for an early list if it is not. True if the workload is named (or needs no name).
  bool Name(Workload* workload);

  struct Stats {
    uint64_t lists_ok = 0;
    uint64_t lists_failed = 0;
    size_t pods = 0;
  };
  Stats stats() const;
  // Blocks until at least `lists` lists have been tried (for tests).
  bool AwaitLists(uint64_t lists, absl::Duration timeout) const;

 private:
  explicit PodDirectory(Options options);
  void Run();
  // One GET of the node's pods.
  absl::StatusOr<std::vector<PodMeta>> List();
  bool Stopping() const;
  void WantList(const std::string& missing) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static constexpr absl::Duration kMissWindow = absl::Seconds(30);
  static constexpr size_t kMaxMisses = 4096;

  const Options options_;
  const std::string url_;

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, PodMeta> pods_ ABSL_GUARDED_BY(mu_);  // by uid
  bool list_wanted_ ABSL_GUARDED_BY(mu_) = false;
  // What Name() missed since the last list (pod uid, or "uid/container id"), and when.
  absl::flat_hash_map<std::string, absl::Time> first_missed_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  Stats stats_ ABSL_GUARDED_BY(mu_);
  absl::Time last_failure_log_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  uint64_t failures_in_a_row_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;
};

}  // namespace reptrace

#endif  // REPTRACE_AGENT_POD_DIRECTORY_H_
