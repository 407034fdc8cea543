// A trace drawn as a terminal waterfall:
//
//   trace 5f0c1e2d3c4b5a69  3.20ms  4 spans  started 2023-11-14 22:13:20.000
//   |0                                 3.20ms|
//   |########################################| curl client GET /api  3.20ms
//   | ###################################### |   nginx server GET /api  3.00ms
//   |   ################################     |     nginx client GET /api  2.50ms
//   |     ##########################         |       python server GET /api  2.00ms ERROR
//
// One row per span in tree order (children under their parent, siblings by start time),
// the label indented two spaces per depth. The timeline spans [first start, last end] of
// the trace; every bar is at least one column wide, and a child that lies within its
// parent in time is drawn within its parent's columns. Pure: no I/O, no clock.
#ifndef REPTRACE_CLI_WATERFALL_H_
#define REPTRACE_CLI_WATERFALL_H_

#include <string>
#include <vector>

#include "absl/time/time.h"
#include "cli/text_output.h"
#include "proto/reptrace.pb.h"

namespace reptrace {
namespace cli {

struct WaterfallOptions {
  int width = 40;  // timeline columns, at least 1
  Charset charset = Charset::kUnicode;
  absl::TimeZone time_zone = absl::UTCTimeZone();  // for the start time in the header
};

struct WaterfallRow {
  const v1::Span* span;
  int depth;
  bool parent_missing;  // has a parent id that is not a span of this trace
};

// The spans of `trace` in display order. A span whose parent is absent (or that is caught
// in a parent cycle) starts a new tree at depth 0. Every span appears exactly once.
std::vector<WaterfallRow> OrderSpansAsTree(const v1::Trace& trace);

// The whole waterfall, newline-terminated. An empty trace gives its header and "no spans".
std::string RenderWaterfall(const v1::Trace& trace, const WaterfallOptions& options);

}  // namespace cli
}  // namespace reptrace

#endif  // REPTRACE_CLI_WATERFALL_H_
