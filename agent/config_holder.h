// ConfigHolder: the trace config the controller last pushed to this agent, with its
// version. The uploader stores what arrives on the ingest stream; readers take a copy.
//
// Holding is all it does for now: the hooks do not follow the config yet. Publishing it to
// the hooked processes (shared memory) is a later change, which will read it from here.
// Thread-safe.
#ifndef REPTRACE_AGENT_CONFIG_HOLDER_H_
#define REPTRACE_AGENT_CONFIG_HOLDER_H_

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "proto/reptrace.pb.h"

namespace reptrace {

class ConfigHolder {
 public:
  ConfigHolder() = default;
  ConfigHolder(const ConfigHolder&) = delete;
  ConfigHolder& operator=(const ConfigHolder&) = delete;

  // Takes `config` as the current one: the controller's word is the current config,
  // whatever the version held before. Returns whether the version changed (the same
  // version again, as after a reconnection, changes nothing).
  bool Set(const v1::ConfigVersion& config);

  // The version held; 0 before the first config arrived.
  uint64_t version() const;
  // A copy of the config held (version 0 and an empty document before the first one).
  v1::ConfigVersion current() const;

 private:
  mutable absl::Mutex mu_;
  v1::ConfigVersion current_ ABSL_GUARDED_BY(mu_);
};

}  // namespace reptrace

#endif  // REPTRACE_AGENT_CONFIG_HOLDER_H_
