#include "controller/config_validation.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/cidr.h"
#include "common/config_page.h"
#include "common/status_macros.h"

namespace reptrace::controller {
namespace {

constexpr uint32_t kMaxPort = 65535;

absl::Status Invalid(absl::string_view path, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", problem));
}

std::string Indexed(absl::string_view path, absl::string_view field, int index) {
  return absl::StrCat(path, path.empty() ? "" : ".", field, "[", index, "]");
}

// At most `limit` entries: what the agents' config page holds (common/config_page.h).
absl::Status CheckCount(int count, uint32_t limit, absl::string_view path,
                        absl::string_view field) {
  if (count <= static_cast<int>(limit)) return absl::OkStatus();
  return Invalid(absl::StrCat(path, path.empty() ? "" : ".", field),
                 absl::StrCat(count, " entries, more than the ", limit,
                              " a hooked process can hold"));
}

// The message's own unknown fields (its sub-messages are checked by their callers).
absl::Status CheckNoUnknownFields(const google::protobuf::Message& message,
                                  absl::string_view path) {
  const google::protobuf::UnknownFieldSet& unknown =
      message.GetReflection()->GetUnknownFields(message);
  if (unknown.empty()) return absl::OkStatus();
  return Invalid(path.empty() ? absl::string_view("config") : path,
                 absl::StrCat("unknown field number ", unknown.field(0).number()));
}

uint32_t Last(const v1::PortRange& range) {
  return range.last() == 0 ? range.first() : range.last();
}

std::string RangeText(const v1::PortRange& range) {
  return range.last() == 0 || range.last() == range.first()
             ? absl::StrCat(range.first())
             : absl::StrCat(range.first(), "-", range.last());
}

// Each range on its own, then no two of them overlapping.
absl::Status CheckPortRanges(
    const google::protobuf::RepeatedPtrField<v1::PortRange>& ranges, absl::string_view path,
    absl::string_view field) {
  for (int i = 0; i < ranges.size(); ++i) {
    const v1::PortRange& range = ranges[i];
    const std::string at = Indexed(path, field, i);
    RETURN_IF_ERROR(CheckNoUnknownFields(range, at));
    if (range.first() == 0 || range.first() > kMaxPort) {
      return Invalid(absl::StrCat(at, ".first"),
                     absl::StrCat("port ", range.first(), " is not in 1..65535"));
    }
    if (range.last() > kMaxPort) {
      return Invalid(absl::StrCat(at, ".last"),
                     absl::StrCat("port ", range.last(), " is not in 1..65535"));
    }
    if (range.last() != 0 && range.last() < range.first()) {
      return Invalid(absl::StrCat(at, ".last"),
                     absl::StrCat(range.last(), " is less than first (", range.first(),
                                  ")"));
    }
  }
  // Sorted by first port: a range overlaps an earlier one exactly when it starts at or
  // before the furthest end seen so far.
  std::vector<int> order(ranges.size());
  for (int i = 0; i < ranges.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](int a, int b) {
    return ranges[a].first() != ranges[b].first() ? ranges[a].first() < ranges[b].first()
                                                  : a < b;
  });
  int furthest = -1;  // index of the range reaching furthest so far
  for (int i : order) {
    if (furthest >= 0 && ranges[i].first() <= Last(ranges[furthest])) {
      const int earlier = std::min(i, furthest);
      const int later = std::max(i, furthest);
      return Invalid(Indexed(path, field, later),
                     absl::StrCat("overlapping port range ", RangeText(ranges[later]),
                                  " makes no sense: it overlaps ", field, "[", earlier,
                                  "] (", RangeText(ranges[earlier]), ")"));
    }
    if (furthest < 0 || Last(ranges[i]) > Last(ranges[furthest])) furthest = i;
  }
  return absl::OkStatus();
}

absl::Status CheckNames(const google::protobuf::RepeatedPtrField<std::string>& names,
                        absl::string_view path, absl::string_view field) {
  for (int i = 0; i < names.size(); ++i) {
    if (names[i].empty()) return Invalid(Indexed(path, field, i), "empty string");
  }
  return absl::OkStatus();
}

absl::Status CheckFilter(const v1::TraceFilter& filter, const std::string& path) {
  RETURN_IF_ERROR(CheckNoUnknownFields(filter, path));
  if (filter.action() == v1::TraceFilter::ACTION_UNSPECIFIED) {
    return Invalid(absl::StrCat(path, ".action"),
                   "ACTION_UNSPECIFIED: say ACTION_INCLUDE or ACTION_EXCLUDE");
  }
  if (!v1::TraceFilter::Action_IsValid(filter.action())) {
    return Invalid(absl::StrCat(path, ".action"),
                   absl::StrCat("unknown action ", filter.action()));
  }
  if (!v1::Direction_IsValid(filter.direction())) {
    return Invalid(absl::StrCat(path, ".direction"),
                   absl::StrCat("unknown direction ", filter.direction()));
  }
  RETURN_IF_ERROR(CheckCount(filter.services_size(), kPageMaxNames, path, "services"));
  RETURN_IF_ERROR(CheckCount(filter.processes_size(), kPageMaxNames, path, "processes"));
  RETURN_IF_ERROR(
      CheckCount(filter.local_ports_size(), kPageMaxPortRanges, path, "local_ports"));
  RETURN_IF_ERROR(CheckCount(filter.peer_ports_size(), kPageMaxPortRanges, path, "peer_ports"));
  RETURN_IF_ERROR(CheckCount(filter.peer_cidrs_size(), kPageMaxCidrs, path, "peer_cidrs"));
  RETURN_IF_ERROR(CheckNames(filter.services(), path, "services"));
  RETURN_IF_ERROR(CheckNames(filter.processes(), path, "processes"));
  RETURN_IF_ERROR(CheckNames(filter.nodes(), path, "nodes"));
  RETURN_IF_ERROR(CheckNames(filter.peer_cidrs(), path, "peer_cidrs"));
  RETURN_IF_ERROR(CheckPortRanges(filter.local_ports(), path, "local_ports"));
  RETURN_IF_ERROR(CheckPortRanges(filter.peer_ports(), path, "peer_ports"));
  for (int i = 0; i < filter.peer_cidrs_size(); ++i) {
    const std::string& cidr = filter.peer_cidrs(i);
    if (absl::StatusOr<Cidr> parsed = ParseCidr(cidr); !parsed.ok()) {
      return Invalid(Indexed(path, "peer_cidrs", i),
                     absl::StrCat("\"", cidr, "\" is not a CIDR (", parsed.status().message(),
                                  ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckSampling(const v1::Sampling& sampling) {
  RETURN_IF_ERROR(CheckNoUnknownFields(sampling, "sampling"));
  const double p = sampling.probability();
  if (std::isnan(p) || p < 0 || p > 1) {
    return Invalid("sampling.probability", absl::StrCat(p, " is not in [0, 1]"));
  }
  if (sampling.keep_slower_than_ms() < 0) {
    return Invalid("sampling.keep_slower_than_ms",
                   absl::StrCat(sampling.keep_slower_than_ms(), " is negative"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateConfig(const v1::TraceConfig& config) {
  RETURN_IF_ERROR(CheckNoUnknownFields(config, ""));
  RETURN_IF_ERROR(CheckCount(config.filters_size(), kPageMaxFilters, "", "filters"));
  RETURN_IF_ERROR(
      CheckCount(config.inband_ports_size(), kPageMaxInbandRanges, "", "inband_ports"));
  for (int i = 0; i < config.filters_size(); ++i) {
    RETURN_IF_ERROR(CheckFilter(config.filters(i), Indexed("", "filters", i)));
  }
  if (config.capture_bytes() > kMaxCaptureBytes) {
    return Invalid("capture_bytes",
                   absl::StrCat(config.capture_bytes(), " > ", kMaxCaptureBytes));
  }
  RETURN_IF_ERROR(CheckSampling(config.sampling()));
  RETURN_IF_ERROR(CheckPortRanges(config.inband_ports(), "", "inband_ports"));
  return absl::OkStatus();
}

v1::TraceConfig DefaultConfig() {
  v1::TraceConfig config;
  config.set_enabled(true);
  config.mutable_sampling()->set_probability(1);
  config.set_capture_bytes(kMaxCaptureBytes);
  return config;
}

}  // namespace reptrace::controller
