// ConfigHolder: the trace config the controller last pushed to this agent, with its
// version, and what publishes it to the node's hooked processes.
//
// The uploader hands it what arrives on the ingest stream; with a ConfigPageWriter, Set()
// writes the config page (common/config_page.h) that every hooked process reads, and only a
// config that reached the page is held and acknowledged as applied. Readers take a copy.
// Thread-safe.
#ifndef REPTRACE_AGENT_CONFIG_HOLDER_H_
#define REPTRACE_AGENT_CONFIG_HOLDER_H_

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "agent/config_page_writer.h"
#include "proto/reptrace.pb.h"

namespace reptrace {

class ConfigHolder {
 public:
  // `page`, if not null, must outlive the holder.
  explicit ConfigHolder(ConfigPageWriter* page = nullptr) : page_(page) {}
  ConfigHolder(const ConfigHolder&) = delete;
  ConfigHolder& operator=(const ConfigHolder&) = delete;

  // Takes `config` as the current one (the controller's word is the current config,
  // whatever the version held before) and publishes it to the page. Returns whether the
  // version changed (the same version again, as after a reconnection, changes nothing
  // and is not written again), or why the page refused it (then nothing changes: the
  // processes keep following the previous version, which stays the one held).
  absl::StatusOr<bool> Set(const v1::ConfigVersion& config);

  // The version held; 0 before the first config arrived.
  uint64_t version() const;
  // A copy of the config held (version 0 and an empty document before the first one).
  v1::ConfigVersion current() const;

 private:
  ConfigPageWriter* const page_;
  mutable absl::Mutex mu_;
  v1::ConfigVersion current_ ABSL_GUARDED_BY(mu_);
};

}  // namespace reptrace

#endif  // REPTRACE_AGENT_CONFIG_HOLDER_H_
