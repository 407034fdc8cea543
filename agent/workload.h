// Where a hooked process runs: its container and Kubernetes pod, so that traces show pods,
// not pids.
//
// The agent learns it in two steps:
//   1. From the process's cgroup (/proc/PID/cgroup, PID as the agent sees it: the hook
//      connection's SO_PEERCRED pid, which is the host's pid when the agent shares the
//      host's pid namespace, as the DaemonSet does): the container id and the pod uid,
//      which every container runtime and the kubelet write into the cgroup path.
//   2. From the Kubernetes API server (PodDirectory, agent/pod_directory.h): the pod's
//      name and namespace and the container's name, by the pod uid and container id.
// Spans then carry them as attributes, with OpenTelemetry's names (kWorkloadAttributes).
#ifndef REPTRACE_AGENT_WORKLOAD_H_
#define REPTRACE_AGENT_WORKLOAD_H_

#include <sys/types.h>

#include <cstddef>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace reptrace {

struct SpanRecord;

struct Workload {
  // 64 lowercase hex digits; empty: not in a container the agent recognizes.
  std::string container_id;
  // The pod's uid, 8-4-4-4-12 lowercase hex digits; empty: not in a Kubernetes pod.
  std::string pod_uid;
  // From the API server; empty until it named the pod.
  std::string pod_name;
  std::string pod_namespace;
  std::string container_name;

  bool in_container() const { return !container_id.empty() || !pod_uid.empty(); }
  // Nothing left to learn from the API server: not in a pod, or the pod is named.
  bool named() const { return pod_uid.empty() || !pod_name.empty(); }
};

// The attribute keys (OpenTelemetry semantic conventions), in key order.
inline constexpr absl::string_view kContainerIdAttribute = "container.id";
inline constexpr absl::string_view kContainerNameAttribute = "k8s.container.name";
inline constexpr absl::string_view kNamespaceAttribute = "k8s.namespace.name";
inline constexpr absl::string_view kPodNameAttribute = "k8s.pod.name";
inline constexpr absl::string_view kPodUidAttribute = "k8s.pod.uid";

// The container id and pod uid named by the contents of a /proc/PID/cgroup file (cgroup
// v1 or v2, any number of hierarchies). Recognized, as the kubelet and the runtimes name
// them, also below a nested cgroup root (kind, Docker-in-Docker) and as seen from another
// cgroup namespace ("/../.."):
//   pods:       ".../pod<uid>/..." (cgroupfs driver),
//               ".../kubepods-<qos>-pod<uid with _>.slice/..." (systemd driver);
//   containers: ".../<64 hex>" (cgroupfs: Docker, containerd, CRI-O),
//               ".../docker-<id>.scope", "cri-containerd-<id>.scope", "crio-<id>.scope",
//               "libpod-<id>.scope" (systemd driver; CRI-O's "crio-conmon-" is not one).
// The innermost container wins. Anything else names nothing (both fields empty).
Workload ParseCgroupFile(absl::string_view contents);

// ParseCgroupFile of /proc/PID/cgroup (under `proc_root`); empty if it cannot be read
// (the process is gone, or pid 0: not visible from the agent's pid namespace).
Workload ReadWorkloadOf(pid_t pid, const std::string& proc_root = "/proc");

// All of a small file (its first `max_bytes`), or nullopt if it cannot be opened or read.
// Never throws: a /proc file of a process that exits while it is read fails with ESRCH,
// which std::ifstream's filebuf turns into an exception (it crashed the agent).
std::optional<std::string> ReadSmallFile(const std::string& path, size_t max_bytes = 65536);
// The same from an open descriptor (not closed here).
std::optional<std::string> ReadAll(int fd, size_t max_bytes = 65536);

// Sets the attributes of what `workload` knows on `span`; they view its strings.
void AddWorkloadAttributes(const Workload& workload, SpanRecord* span);

}  // namespace reptrace

#endif  // REPTRACE_AGENT_WORKLOAD_H_
