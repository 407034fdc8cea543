// The one logging approach of reptrace's binaries (bookworm's Abseil has no absl/log):
// one line per message on stderr, "2026-11-21T23:59:01.123456Z I agent] text".
// Thread-safe; lines from several threads never interleave.
#ifndef REPTRACE_COMMON_LOG_H_
#define REPTRACE_COMMON_LOG_H_

#include "absl/strings/string_view.h"

#include "absl/strings/str_format.h"

namespace reptrace {

enum class LogSeverity { kInfo, kWarning, kError };

// Names the program in every line ("agent", "controller"). Call once from main.
void SetLogComponent(absl::string_view component);
void LogLine(LogSeverity severity, absl::string_view message);

template <typename... Args>
void LogInfo(const absl::FormatSpec<Args...>& format, const Args&... args) {
  LogLine(LogSeverity::kInfo, absl::StrFormat(format, args...));
}
template <typename... Args>
void LogWarning(const absl::FormatSpec<Args...>& format, const Args&... args) {
  LogLine(LogSeverity::kWarning, absl::StrFormat(format, args...));
}
template <typename... Args>
void LogError(const absl::FormatSpec<Args...>& format, const Args&... args) {
  LogLine(LogSeverity::kError, absl::StrFormat(format, args...));
}

}  // namespace reptrace

#endif  // REPTRACE_COMMON_LOG_H_
