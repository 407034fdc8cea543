#include "common/log.h"

#include <cstdio>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace reptrace {
namespace {

absl::Mutex log_mu;
std::string& Component() {
  static auto* component = new std::string("reptrace");
  return *component;
}

}  // namespace

void SetLogComponent(absl::string_view component) {
  absl::MutexLock lock(&log_mu);
  Component() = std::string(component);
}

void LogLine(LogSeverity severity, absl::string_view message) {
  const char letter = severity == LogSeverity::kInfo      ? 'I'
                      : severity == LogSeverity::kWarning ? 'W'
                                                          : 'E';
  std::string line = absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", absl::Now(), absl::UTCTimeZone());
  absl::MutexLock lock(&log_mu);
  absl::StrAppend(&line, " ", std::string(1, letter), " ", Component(), "] ", message, "\n");
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

}  // namespace reptrace
