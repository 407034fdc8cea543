// Human-readable output of reptracectl: units, times, and the `traces`, `agents` and
// `stats` tables. Pure functions of their inputs (the time zone is passed in).
#ifndef REPTRACE_CLI_TEXT_OUTPUT_H_
#define REPTRACE_CLI_TEXT_OUTPUT_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "proto/reptrace.pb.h"

namespace reptrace {
namespace cli {

enum class Charset { kUnicode, kAscii };

// Returns kAscii when asked (--ascii), when NO_COLOR is set (to anything), when stdout is
// not a terminal, or when the locale (the first set of LC_ALL, LC_CTYPE, LANG) is not
// UTF-8; kUnicode otherwise. `getenv` returns nullopt for an unset variable.
Charset ChooseCharset(bool ascii_flag, bool stdout_is_terminal,
                      const std::function<std::optional<std::string>(const char*)>& getenv);

// "850ns", "12.3µs" ("12.3us" in ASCII), "1.23ms", "123ms", "4.56s": three significant
// digits at most. Negative durations are shown as 0ns.
std::string FormatDuration(int64_t ns, Charset charset);

// "2026-11-21 23:59:01.123" in `zone`; "-" for 0.
std::string FormatTimestamp(int64_t unix_ns, absl::TimeZone zone);

// "ok", "error", "unset"; "client", "server", "unspecified".
std::string StatusName(v1::SpanStatus status);
std::string KindName(v1::SpanKind kind);

// Number of terminal columns of a UTF-8 string (one per code point: no wide characters
// appear in what we print besides user-supplied names).
size_t DisplayWidth(absl::string_view text);

// Left-aligned columns separated by two spaces, a header row first, no trailing spaces.
std::string RenderTable(const std::vector<std::string>& header,
                        const std::vector<std::vector<std::string>>& rows);

// The `traces` table: TRACE ID, START, DURATION, SPANS, ROOT SERVICE, ROOT NAME, STATUS,
// SERVICES. "no traces" when empty.
std::string FormatTraceList(const v1::ListTracesResponse& response, absl::TimeZone zone,
                            Charset charset);

// The `agents` table: NODE, AGENT ID, VERSION, CONNECTED, LAST SEEN, BATCHES, SPANS,
// HOOK DROPS, SPAN DROPS, MALFORMED. "no agents" when empty.
std::string FormatAgentList(const v1::ListAgentsResponse& response, absl::TimeZone zone);

// The `stats` tables. "Agents" (or "Agents: none"), then NODE, AGENT ID, CONNECTED,
// EVENTS, SPANS BUILT, SPANS STORED and the drops: HOOK DROPS, RATE LIMITED, MALFORMED,
// NO CONNECTION, SPAN DROPS, REJECTED. A blank line, "Sampling (all controllers)", then
// DECISION, TRACES, SPANS: "kept: error", "kept: slow", "kept: probability",
// "dropped: probability", and "pending" (traces only: spans "-").
std::string FormatStats(const v1::GetStatsResponse& response);

}  // namespace cli
}  // namespace reptrace

#endif  // REPTRACE_CLI_TEXT_OUTPUT_H_
