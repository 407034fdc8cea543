#include "cli/text_output.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/ids.h"

namespace reptrace {
namespace cli {
namespace {

// Three significant digits: "1.23", "12.3", "123".
std::string ThreeDigits(double value) {
  if (value < 9.995) return absl::StrFormat("%.2f", value);
  if (value < 99.95) return absl::StrFormat("%.1f", value);
  return absl::StrFormat("%.0f", value);
}

}  // namespace

Charset ChooseCharset(bool ascii_flag, bool stdout_is_terminal,
                      const std::function<std::optional<std::string>(const char*)>& getenv) {
  if (ascii_flag || !stdout_is_terminal || getenv("NO_COLOR").has_value()) {
    return Charset::kAscii;
  }
  for (const char* name : {"LC_ALL", "LC_CTYPE", "LANG"}) {
    std::optional<std::string> value = getenv(name);
    if (!value.has_value() || value->empty()) continue;
    std::string lower = absl::AsciiStrToLower(*value);
    return absl::StrContains(lower, "utf-8") || absl::StrContains(lower, "utf8")
               ? Charset::kUnicode
               : Charset::kAscii;
  }
  return Charset::kAscii;  // the "C" locale
}

std::string FormatDuration(int64_t ns, Charset charset) {
  if (ns < 1000) return absl::StrCat(std::max<int64_t>(ns, 0), "ns");
  const char* micro = charset == Charset::kUnicode ? "\xC2\xB5s" : "us";
  struct Unit {
    double scale;
    const char* name;
  };
  const Unit units[] = {{1e3, micro}, {1e6, "ms"}, {1e9, "s"}};
  for (size_t i = 0; i < 3; ++i) {
    double value = static_cast<double>(ns) / units[i].scale;
    // Move up a unit when rounding would print "1000".
    if (i + 1 < 3 && value >= 999.5) continue;
    return absl::StrCat(ThreeDigits(value), units[i].name);
  }
  return "?";  // not reached: the last unit always returns
}

std::string FormatTimestamp(int64_t unix_ns, absl::TimeZone zone) {
  if (unix_ns == 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%E3S", absl::FromUnixNanos(unix_ns), zone);
}

std::string StatusName(v1::SpanStatus status) {
  switch (status) {
    case v1::SPAN_STATUS_OK: return "ok";
    case v1::SPAN_STATUS_ERROR: return "error";
    default: return "unset";
  }
}

std::string KindName(v1::SpanKind kind) {
  switch (kind) {
    case v1::SPAN_KIND_CLIENT: return "client";
    case v1::SPAN_KIND_SERVER: return "server";
    default: return "unspecified";
  }
}

size_t DisplayWidth(absl::string_view text) {
  size_t width = 0;
  for (char c : text) {
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++width;  // not a continuation
  }
  return width;
}

std::string RenderTable(const std::vector<std::string>& header,
                        const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths(header.size(), 0);
  auto widen = [&widths](const std::vector<std::string>& row) {
    for (size_t i = 0; i < row.size() && i < widths.size(); ++i) {
      widths[i] = std::max(widths[i], DisplayWidth(row[i]));
    }
  };
  widen(header);
  for (const auto& row : rows) widen(row);

  std::string out;
  auto emit = [&](const std::vector<std::string>& row) {
    std::string line;
    for (size_t i = 0; i < row.size() && i < widths.size(); ++i) {
      if (i > 0) line.append(2, ' ');
      line += row[i];
      if (i + 1 < row.size()) line.append(widths[i] - DisplayWidth(row[i]), ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    absl::StrAppend(&out, line, "\n");
  };
  emit(header);
  for (const auto& row : rows) emit(row);
  return out;
}

std::string FormatTraceList(const v1::ListTracesResponse& response, absl::TimeZone zone,
                            Charset charset) {
  if (response.traces().empty()) return "no traces\n";
  std::vector<std::vector<std::string>> rows;
  for (const v1::TraceSummary& trace : response.traces()) {
    rows.push_back({FormatId(trace.trace_id()), FormatTimestamp(trace.start_ns(), zone),
                    FormatDuration(trace.duration_ns(), charset),
                    absl::StrCat(trace.span_count()), trace.root_service(), trace.root_name(),
                    StatusName(trace.status()), absl::StrJoin(trace.services(), ",")});
  }
  return RenderTable({"TRACE ID", "START", "DURATION", "SPANS", "ROOT SERVICE", "ROOT NAME",
                      "STATUS", "SERVICES"},
                     rows);
}

std::string FormatAgentList(const v1::ListAgentsResponse& response, absl::TimeZone zone) {
  if (response.agents().empty()) return "no agents\n";
  std::vector<std::vector<std::string>> rows;
  for (const v1::AgentInfo& agent : response.agents()) {
    const v1::AgentCounters& counters = agent.counters();
    rows.push_back({agent.node(), agent.agent_id(), agent.agent_version(),
                    agent.connected() ? "yes" : "no", FormatTimestamp(agent.last_seen_ns(), zone),
                    agent.config_version() == 0 ? "-" : absl::StrCat(agent.config_version()),
                    absl::StrCat(agent.batches_stored()), absl::StrCat(agent.spans_stored()),
                    absl::StrCat(counters.hook_events_dropped()),
                    absl::StrCat(counters.hook_events_rate_limited()),
                    absl::StrCat(counters.spans_dropped()),
                    absl::StrCat(counters.records_malformed()),
                    absl::StrCat(counters.events_without_connection()),
                    absl::StrCat(counters.inband_peers_not_hooked())});
  }
  return RenderTable({"NODE", "AGENT ID", "VERSION", "CONNECTED", "LAST SEEN", "CONFIG", "BATCHES",
                      "SPANS", "HOOK DROPS", "RATE LIMITED", "SPAN DROPS", "MALFORMED", "NO CONNECTION",
                      "UNHOOKED PEERS"},
                     rows);
}

std::string FormatStats(const v1::GetStatsResponse& response) {
  std::string out;
  if (response.agents().empty()) {
    out = "Agents: none\n";
  } else {
    std::vector<std::vector<std::string>> rows;
    for (const v1::AgentStats& a : response.agents()) {
      rows.push_back({a.node(), a.agent_id(), a.connected() ? "yes" : "no",
                      absl::StrCat(a.events_received()), absl::StrCat(a.spans_built()),
                      absl::StrCat(a.spans_stored()), absl::StrCat(a.hook_events_dropped()),
                      absl::StrCat(a.hook_events_rate_limited()),
                      absl::StrCat(a.records_malformed()),
                      absl::StrCat(a.events_without_connection()),
                      absl::StrCat(a.spans_dropped()), absl::StrCat(a.spans_rejected())});
    }
    out = absl::StrCat("Agents\n",
                       RenderTable({"NODE", "AGENT ID", "CONNECTED", "EVENTS", "SPANS BUILT",
                                    "SPANS STORED", "HOOK DROPS", "RATE LIMITED", "MALFORMED",
                                    "NO CONNECTION", "SPAN DROPS", "REJECTED"},
                                   rows));
  }
  const v1::SamplingStats& s = response.sampling();
  auto row = [](const char* name, const v1::SamplingCount& count) {
    return std::vector<std::string>{name, absl::StrCat(count.traces()),
                                    absl::StrCat(count.spans())};
  };
  absl::StrAppend(
      &out, "\nSampling (all controllers)\n",
      RenderTable({"DECISION", "TRACES", "SPANS"},
                  {row("kept: error", s.kept_error()), row("kept: slow", s.kept_slow()),
                   row("kept: probability", s.kept_probability()),
                   row("dropped: probability", s.dropped_probability()),
                   {"pending", absl::StrCat(s.traces_pending()), "-"}}));
  return out;
}

}  // namespace cli
}  // namespace reptrace
