// ConfigPageWriter: publishes the trace config to the hooked processes of this node.
//
// The page (common/config_page.h) is a file next to the agent's socket that every hooked
// process maps read-only. Open() reuses a valid file in place (a restarted or upgraded
// agent: the processes that mapped it keep following it, and it still holds the last
// config) and otherwise makes a new one (written whole under a temporary name, then renamed
// into place, mode 0644). Publish() encodes a config version and writes it with the
// seqlock protocol; a reader never sees half of it.
//
// EncodeConfigBody is the pure part: what a TraceConfig becomes on the page for the node
// `node` (a filter that names other nodes only matches nothing here; service and program
// names become NameHash values, a program name cut to the kernel's 15 bytes of comm).
#ifndef REPTRACE_AGENT_CONFIG_PAGE_WRITER_H_
#define REPTRACE_AGENT_CONFIG_PAGE_WRITER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/config_page.h"
#include "proto/reptrace.pb.h"

namespace reptrace {

// The page's path for an agent socket.
std::string ConfigPagePath(absl::string_view socket_path);

// INVALID_ARGUMENT if `config` does not fit the page or is malformed (the controller
// refuses such documents; this is the agent's own check). `body` is fully written on OK.
absl::Status EncodeConfigBody(const v1::TraceConfig& config, uint64_t version,
                              absl::string_view node, ConfigBody* body);

// The body of a page before any config came: everything traced, as a process without a
// page does.
void DefaultConfigBody(ConfigBody* body);

class ConfigPageWriter {
 public:
  static absl::StatusOr<std::unique_ptr<ConfigPageWriter>> Open(std::string path,
                                                               std::string node);
  ConfigPageWriter(const ConfigPageWriter&) = delete;
  ConfigPageWriter& operator=(const ConfigPageWriter&) = delete;
  ~ConfigPageWriter();  // unmaps; the file stays for the processes that use it

  // Encodes and writes `config`. Not thread-safe: one writer (the caller serializes).
  absl::Status Publish(const v1::ConfigVersion& config);

  const std::string& path() const { return path_; }
  // The controller's version the page holds (0: none yet), and its seq.
  uint64_t version() const;
  uint64_t seq() const;

 private:
  ConfigPageWriter(std::string path, std::string node, ConfigPage* page)
      : path_(std::move(path)), node_(std::move(node)), page_(page) {}

  const std::string path_;
  const std::string node_;
  ConfigPage* const page_;
};

}  // namespace reptrace

#endif  // REPTRACE_AGENT_CONFIG_PAGE_WRITER_H_
