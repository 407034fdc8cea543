#include "agent/config_holder.h"

namespace reptrace {

bool ConfigHolder::Set(const v1::ConfigVersion& config) {
  absl::MutexLock lock(&mu_);
  const bool changed = config.version() != current_.version();
  current_ = config;
  return changed;
}

uint64_t ConfigHolder::version() const {
  absl::MutexLock lock(&mu_);
  return current_.version();
}

v1::ConfigVersion ConfigHolder::current() const {
  absl::MutexLock lock(&mu_);
  return current_;
}

}  // namespace reptrace
