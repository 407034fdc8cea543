#include "agent/pod_directory.h"

#include <curl/curl.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/log.h"
#include "nlohmann/json.hpp"

namespace reptrace {
namespace {

// A string member of a JSON object, or empty.
std::string StringAt(const nlohmann::json& object, const char* key) {
  if (!object.is_object()) return {};
  auto it = object.find(key);
  if (it == object.end() || !it->is_string()) return {};
  return it->get<std::string>();
}

void AddContainers(const nlohmann::json& status, const char* key, PodMeta* pod) {
  if (!status.is_object()) return;
  auto list = status.find(key);
  if (list == status.end() || !list->is_array()) return;
  for (const nlohmann::json& container : *list) {
    // "containerd://<id>", "docker://<id>", "cri-o://<id>"; absent until it started.
    std::string id = StringAt(container, "containerID");
    const size_t scheme = id.find("://");
    if (scheme != std::string::npos) id.erase(0, scheme + 3);
    const std::string name = StringAt(container, "name");
    if (!id.empty() && !name.empty()) pod->containers.emplace_back(std::move(id), name);
  }
}

size_t AppendBody(char* data, size_t size, size_t count, void* body) {
  static_cast<std::string*>(body)->append(data, size * count);
  return size * count;
}

}  // namespace

absl::StatusOr<std::vector<PodMeta>> ParsePodList(absl::string_view json) {
  const nlohmann::json doc = nlohmann::json::parse(json.begin(), json.end(), nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the answer is not a JSON object (", json.size(), " bytes: \"",
        absl::CEscape(json.substr(0, 80)), json.size() > 80 ? "...\")" : "\")"));
  }
  const std::string kind = StringAt(doc, "kind");
  if (kind == "Status") {
    // What the API server says instead of a list: "pods is forbidden: ...".
    const auto code = doc.find("code");
    return absl::FailedPreconditionError(absl::StrCat(
        "the API server refused: ", StringAt(doc, "message"),
        code != doc.end() && code->is_number_integer()
            ? absl::StrCat(" (", code->get<int64_t>(), ")")
            : std::string()));
  }
  if (kind != "PodList") {
    return absl::InvalidArgumentError(
        absl::StrCat("the answer is not a PodList (its kind: \"", kind, "\")"));
  }
  std::vector<PodMeta> pods;
  const auto items = doc.find("items");
  // An empty list may come as "items": null.
  if (items == doc.end() || items->is_null()) return pods;
  if (!items->is_array()) {
    return absl::InvalidArgumentError("the PodList's items are not an array");
  }
  for (const nlohmann::json& item : *items) {
    if (!item.is_object()) continue;
    const auto metadata = item.find("metadata");
    if (metadata == item.end()) continue;
    PodMeta pod;
    pod.uid = StringAt(*metadata, "uid");
    pod.name = StringAt(*metadata, "name");
    pod.namespace_name = StringAt(*metadata, "namespace");
    if (pod.uid.empty() || pod.name.empty()) continue;
    const auto status = item.find("status");
    if (status != item.end()) {
      AddContainers(*status, "containerStatuses", &pod);
      AddContainers(*status, "initContainerStatuses", &pod);
      AddContainers(*status, "ephemeralContainerStatuses", &pod);
    }
    pods.push_back(std::move(pod));
  }
  return pods;
}

absl::StatusOr<std::string> PodDirectory::InClusterApiServer() {
  const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
  const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
  if (host == nullptr || *host == '\0' || port == nullptr || *port == '\0') {
    return absl::NotFoundError("not in a Kubernetes pod (no KUBERNETES_SERVICE_HOST/_PORT)");
  }
  const absl::string_view h = host;
  // An IPv6 address goes in brackets.
  if (h.find(':') != absl::string_view::npos) return absl::StrCat("https://[", h, "]:", port);
  return absl::StrCat("https://", h, ":", port);
}

PodDirectory::PodDirectory(Options options)
    : options_(std::move(options)),
      url_(absl::StrCat(absl::StripSuffix(options_.api_server, "/"),
                        "/api/v1/pods?fieldSelector=spec.nodeName%3D")) {}

absl::StatusOr<std::unique_ptr<PodDirectory>> PodDirectory::Start(Options options) {
  if (options.api_server.empty()) {
    return absl::InvalidArgumentError("no API server address");
  }
  if (options.node.empty()) return absl::InvalidArgumentError("no node name");
  static std::once_flag curl_once;
  static CURLcode curl_init = CURLE_OK;
  std::call_once(curl_once, [] { curl_init = curl_global_init(CURL_GLOBAL_DEFAULT); });
  if (curl_init != CURLE_OK) {
    return absl::InternalError(
        absl::StrCat("libcurl's initialisation failed: ", curl_easy_strerror(curl_init)));
  }
  std::unique_ptr<PodDirectory> directory(new PodDirectory(std::move(options)));
  directory->thread_ = std::thread([d = directory.get()] { d->Run(); });
  return directory;
}

PodDirectory::~PodDirectory() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

bool PodDirectory::Stopping() const {
  absl::MutexLock lock(&mu_);
  return stop_;
}

bool PodDirectory::Name(Workload* workload) {
  if (workload->pod_uid.empty()) return true;
  absl::MutexLock lock(&mu_);
  auto it = pods_.find(workload->pod_uid);
  if (it == pods_.end()) {
    WantList(workload->pod_uid);
    return false;
  }
  const PodMeta& pod = it->second;
  workload->pod_name = pod.name;
  workload->pod_namespace = pod.namespace_name;
  if (workload->container_id.empty()) return true;
  for (const auto& [id, name] : pod.containers) {
    if (id == workload->container_id) {
      workload->container_name = name;
      return true;
    }
  }
  // The pod is listed before its status names a container that just started.
  WantList(absl::StrCat(workload->pod_uid, "/", workload->container_id));
  return false;
}

void PodDirectory::WantList(const std::string& missing) {
  // A pod or container that stays unknown (a static pod the API server has no mirror of,
  // a process of a container that never shows in the pod's status) asks for early lists
  // during kMissWindow after it was first missed only: then the periodic lists cover it,
  // not one list per min_interval forever.
  const absl::Time now = absl::Now();
  if (first_missed_.size() >= kMaxMisses) first_missed_.clear();
  auto [it, is_new] = first_missed_.try_emplace(missing, now);
  if (now - it->second <= kMissWindow) list_wanted_ = true;
}

PodDirectory::Stats PodDirectory::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

bool PodDirectory::AwaitLists(uint64_t lists, absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  auto done = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return stats_.lists_ok + stats_.lists_failed >= lists;
  };
  return mu_.AwaitWithTimeout(absl::Condition(&done), timeout);
}

void PodDirectory::Run() {
  absl::Time last_list = absl::InfinitePast();
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      // Until the next periodic list, or sooner when a span asks for a pod it does not
      // know (Name() sets list_wanted_ under mu_, which wakes this wait), but never within
      // min_interval of the last list.
      auto wanted = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stop_ || list_wanted_; };
      mu_.AwaitWithDeadline(absl::Condition(&wanted), last_list + options_.refresh_interval);
      if (!stop_ && list_wanted_) {
        mu_.AwaitWithDeadline(absl::Condition(&stop_), last_list + options_.min_interval);
      }
      if (stop_) return;
      list_wanted_ = false;
    }
    last_list = absl::Now();
    absl::StatusOr<std::vector<PodMeta>> pods = List();
    absl::MutexLock lock(&mu_);
    if (!pods.ok()) {
      ++stats_.lists_failed;
      ++failures_in_a_row_;
      if (absl::Now() - last_failure_log_ >= absl::Minutes(1)) {
        last_failure_log_ = absl::Now();
        LogWarning("pod names: listing node %s's pods at %s failed: %s (spans keep their "
                   "container id and pod uid; trying again within %s)",
                   options_.node, options_.api_server, pods.status().message(),
                   absl::FormatDuration(options_.refresh_interval));
      }
      continue;
    }
    if (failures_in_a_row_ > 0) {
      LogInfo("pod names: listed node %s's pods (%d) after %d failed tries", options_.node,
              pods->size(), failures_in_a_row_);
      failures_in_a_row_ = 0;
      last_failure_log_ = absl::InfinitePast();
    }
    ++stats_.lists_ok;
    pods_.clear();
    // Misses are remembered a while past their window, so that one still unknown does not
    // start a new window at once.
    absl::erase_if(first_missed_, [now = absl::Now()](const auto& miss) {
      return now - miss.second > 20 * kMissWindow;
    });
    for (PodMeta& pod : *pods) {
      std::string uid = pod.uid;
      pods_.insert_or_assign(std::move(uid), std::move(pod));
    }
    stats_.pods = pods_.size();
  }
}

absl::StatusOr<std::vector<PodMeta>> PodDirectory::List() {
  std::string token;
  if (!options_.token_file.empty()) {
    const std::optional<std::string> read = ReadSmallFile(options_.token_file);
    if (!read) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot read the token file ", options_.token_file, ": ", std::strerror(errno)));
    }
    token = std::string(absl::StripAsciiWhitespace(*read));
  }
  CURL* curl = curl_easy_init();
  if (curl == nullptr) return absl::ResourceExhaustedError("curl_easy_init failed");
  std::string body;
  char error[CURL_ERROR_SIZE] = {};
  curl_slist* headers = curl_slist_append(nullptr, "Accept: application/json");
  const std::string authorization = absl::StrCat("Authorization: Bearer ", token);
  if (!token.empty()) headers = curl_slist_append(headers, authorization.c_str());
  // Node names are DNS subdomain names: nothing in them needs escaping in a query.
  const std::string url = url_ + options_.node;
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, &AppendBody);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS,
                   static_cast<long>(absl::ToInt64Milliseconds(options_.request_timeout)));
  curl_easy_setopt(curl, CURLOPT_ACCEPT_ENCODING, "");  // gzip: a big node's list is MiBs
  if (!options_.ca_file.empty()) curl_easy_setopt(curl, CURLOPT_CAINFO, options_.ca_file.c_str());
  // Stopping abandons a request in progress (libcurl calls this about once a second, and
  // whenever data moves).
  curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(curl, CURLOPT_XFERINFODATA, this);
  curl_easy_setopt(
      curl, CURLOPT_XFERINFOFUNCTION,
      +[](void* self, curl_off_t, curl_off_t, curl_off_t, curl_off_t) -> int {
        return static_cast<PodDirectory*>(self)->Stopping() ? 1 : 0;
      });
  const CURLcode result = curl_easy_perform(curl);
  long code = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  if (result != CURLE_OK) {
    return absl::UnavailableError(
        absl::StrCat(curl_easy_strerror(result), error[0] != '\0' ? ": " : "", error));
  }
  absl::StatusOr<std::vector<PodMeta>> pods = ParsePodList(body);
  if (code == 200) return pods;
  // What the API server said instead (its Status), if it said something readable.
  return absl::UnavailableError(absl::StrCat("HTTP status ", code, pods.ok() ? "" : ": ",
                                             pods.ok() ? "" : pods.status().message()));
}

}  // namespace reptrace
