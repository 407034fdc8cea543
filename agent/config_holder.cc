#include "agent/config_holder.h"

namespace reptrace {

absl::StatusOr<bool> ConfigHolder::Set(const v1::ConfigVersion& config) {
  absl::MutexLock lock(&mu_);
  if (config.version() == current_.version() && current_.version() != 0) return false;
  if (page_ != nullptr) {
    if (absl::Status status = page_->Publish(config); !status.ok()) return status;
  }
  current_ = config;
  return true;
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
