#include "agent/workload.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "agent/span_record.h"

namespace reptrace {
namespace {

constexpr size_t kContainerIdLength = 64;
constexpr size_t kUidLength = 36;  // 8-4-4-4-12

bool IsLowerHex(absl::string_view s) {
  for (char c : s) {
    if (!absl::ascii_isxdigit(c) || absl::ascii_isupper(c)) return false;
  }
  return !s.empty();
}

// A container id in one path component, or empty.
absl::string_view ContainerIdIn(absl::string_view component) {
  if (component.size() == kContainerIdLength) {
    return IsLowerHex(component) ? component : absl::string_view();
  }
  if (!absl::ConsumeSuffix(&component, ".scope")) return {};
  // The systemd driver's scopes: "<runtime>-<id>.scope". CRI-O also makes a scope for
  // conmon, its monitor process, named "crio-conmon-<id>.scope": not the container.
  for (absl::string_view prefix : {"docker-", "cri-containerd-", "crio-", "libpod-"}) {
    absl::string_view id = component;
    if (absl::ConsumePrefix(&id, prefix) &&
        id.size() == kContainerIdLength && IsLowerHex(id)) {
      return id;
    }
  }
  return {};
}

// A pod uid in one path component (dashes restored), or empty.
std::string PodUidIn(absl::string_view component) {
  absl::string_view rest = component;
  // The systemd driver's slices: "kubepods-pod<uid>.slice" (guaranteed QoS) and
  // "kubepods-<qos>-pod<uid>.slice", the uid's dashes written as underscores (a dash
  // separates a slice name's levels); under a kubelet cgroup root other than "/", that
  // root's name before them ("kubelet-kubepods-...", as kind names them).
  if (absl::ConsumeSuffix(&rest, ".slice")) {
    const size_t at = rest.rfind("-pod");
    if (at == absl::string_view::npos || !absl::StrContains(rest, "kubepods")) return {};
    rest.remove_prefix(at + 4);
  } else if (!absl::ConsumePrefix(&rest, "pod")) {  // cgroupfs: "pod<uid>"
    return {};
  }
  if (rest.size() != kUidLength) return {};
  std::string uid(rest);
  for (size_t i = 0; i < uid.size(); ++i) {
    char& c = uid[i];
    const bool dash_place = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash_place) {
      if (c != '-' && c != '_') return {};
      c = '-';
    } else if (!absl::ascii_isxdigit(c) || absl::ascii_isupper(c)) {
      return {};
    }
  }
  return uid;
}

// What one cgroup path names: the innermost container, and the pod it is in.
Workload ParsePath(absl::string_view path) {
  Workload found;
  for (absl::string_view component : absl::StrSplit(path, '/', absl::SkipEmpty())) {
    if (absl::string_view id = ContainerIdIn(component); !id.empty()) {
      found.container_id = std::string(id);
      continue;
    }
    if (std::string uid = PodUidIn(component); !uid.empty()) {
      // A pod further in (a nested cluster's) starts over: its container comes after it.
      found.pod_uid = std::move(uid);
      found.container_id.clear();
    }
  }
  return found;
}

// How much a line's path names: a pod and its container over a container alone over
// nothing.
int Score(const Workload& w) {
  return (w.container_id.empty() ? 0 : 1) + (w.pod_uid.empty() ? 0 : 2);
}

}  // namespace

Workload ParseCgroupFile(absl::string_view contents) {
  // Every hierarchy's line normally names the same cgroup. The one that names the most
  // wins.
  Workload best;
  for (absl::string_view line : absl::StrSplit(contents, '\n', absl::SkipEmpty())) {
    // "hierarchy-ID:controller-list:cgroup-path"; the path may itself hold ':'.
    const size_t first = line.find(':');
    if (first == absl::string_view::npos) continue;
    const size_t second = line.find(':', first + 1);
    if (second == absl::string_view::npos) continue;
    Workload here = ParsePath(line.substr(second + 1));
    if (Score(here) > Score(best)) best = std::move(here);
  }
  return best;
}

Workload ReadWorkloadOf(pid_t pid, const std::string& proc_root) {
  if (pid <= 0) return {};
  const std::string path = absl::StrCat(proc_root, "/", pid, "/cgroup");
  // A process in a few dozen v1 hierarchies writes a couple of KiB.
  const std::optional<std::string> contents = ReadSmallFile(path);
  return contents ? ParseCgroupFile(*contents) : Workload();
}

std::optional<std::string> ReadAll(int fd, size_t max_bytes) {
  std::string contents;
  char buffer[4096];
  while (contents.size() < max_bytes) {
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::nullopt;
    if (n == 0) break;
    contents.append(buffer, static_cast<size_t>(n));
  }
  if (contents.size() > max_bytes) contents.resize(max_bytes);
  return contents;
}

std::optional<std::string> ReadSmallFile(const std::string& path, size_t max_bytes) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::optional<std::string> contents = ReadAll(fd, max_bytes);
  close(fd);
  return contents;
}

void AddWorkloadAttributes(const Workload& workload, SpanRecord* span) {
  if (!workload.container_id.empty()) {
    span->SetAttribute(kContainerIdAttribute, workload.container_id);
  }
  if (!workload.container_name.empty()) {
    span->SetAttribute(kContainerNameAttribute, workload.container_name);
  }
  if (!workload.pod_namespace.empty()) {
    span->SetAttribute(kNamespaceAttribute, workload.pod_namespace);
  }
  if (!workload.pod_name.empty()) span->SetAttribute(kPodNameAttribute, workload.pod_name);
  if (!workload.pod_uid.empty()) span->SetAttribute(kPodUidAttribute, workload.pod_uid);
}

}  // namespace reptrace
