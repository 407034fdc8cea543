#include "cli/waterfall.h"

#include <algorithm>
#include <limits>
#include <tuple>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "common/ids.h"

namespace reptrace {
namespace cli {
namespace {

// Where the span's process ran, when it ran in a container (the agent's attributes,
// agent/workload.h): "  (pod NAMESPACE/NAME)", or "  (container ID12)" with the short id
// Docker and crictl show when no pod is named; else nothing.
std::string WhereItRan(const v1::Span& span) {
  const auto& attributes = span.attributes();
  auto pod = attributes.find("k8s.pod.name");
  if (pod != attributes.end() && !pod->second.empty()) {
    auto ns = attributes.find("k8s.namespace.name");
    return absl::StrCat("  (pod ", ns != attributes.end() ? ns->second : "", "/", pod->second,
                        ")");
  }
  auto container = attributes.find("container.id");
  if (container != attributes.end() && !container->second.empty()) {
    return absl::StrCat("  (container ", container->second.substr(0, 12), ")");
  }
  return "";
}

int64_t SpanEnd(const v1::Span& span) { return std::max(span.start_ns(), span.end_ns()); }

// Columns [first, last] of a time range on a timeline of `width` columns covering
// [t0, t0 + duration]: column c covers [c, c+1) * duration / width.
struct Columns {
  int first;
  int last;
};

Columns ColumnsOf(int64_t start, int64_t end, int64_t t0, int64_t duration, int width) {
  if (duration <= 0) return {0, 0};
  const __int128 w = width;
  const __int128 d = duration;
  const __int128 from = static_cast<__int128>(start - t0) * w;
  const __int128 to = static_cast<__int128>(end - t0) * w;
  int first = static_cast<int>(std::min<__int128>(w - 1, from / d));
  int last = static_cast<int>(std::min<__int128>(w - 1, (to + d - 1) / d - 1));  // ceil - 1
  return {first, std::max(first, last)};
}

}  // namespace

std::vector<WaterfallRow> OrderSpansAsTree(const v1::Trace& trace) {
  const int n = trace.spans_size();
  std::unordered_map<uint64_t, int> index_of;
  for (int i = 0; i < n; ++i) index_of.emplace(trace.spans(i).span_id(), i);

  auto earlier = [&trace](int a, int b) {
    const v1::Span& x = trace.spans(a);
    const v1::Span& y = trace.spans(b);
    return std::make_tuple(x.start_ns(), x.span_id(), a) <
           std::make_tuple(y.start_ns(), y.span_id(), b);
  };

  std::vector<std::vector<int>> children(n);
  std::vector<int> roots;
  std::vector<bool> parent_missing(n, false);
  for (int i = 0; i < n; ++i) {
    const v1::Span& span = trace.spans(i);
    auto parent = index_of.find(span.parent_span_id());
    if (span.parent_span_id() == 0 || parent == index_of.end() || parent->second == i) {
      roots.push_back(i);
      parent_missing[i] = span.parent_span_id() != 0 && parent == index_of.end();
    } else {
      children[parent->second].push_back(i);
    }
  }
  std::sort(roots.begin(), roots.end(), earlier);
  for (auto& list : children) std::sort(list.begin(), list.end(), earlier);

  std::vector<WaterfallRow> rows;
  rows.reserve(n);
  std::vector<bool> visited(n, false);
  auto walk = [&](int root) {
    std::vector<std::pair<int, int>> stack = {{root, 0}};  // (span, depth)
    while (!stack.empty()) {
      auto [i, depth] = stack.back();
      stack.pop_back();
      if (visited[i]) continue;
      visited[i] = true;
      rows.push_back({&trace.spans(i), depth, parent_missing[i]});
      for (auto it = children[i].rbegin(); it != children[i].rend(); ++it) {
        if (!visited[*it]) stack.push_back({*it, depth + 1});
      }
    }
  };
  for (int root : roots) walk(root);
  // Spans caught in a parent cycle are reachable from no root: each starts a tree.
  std::vector<int> rest;
  for (int i = 0; i < n; ++i) {
    if (!visited[i]) rest.push_back(i);
  }
  std::sort(rest.begin(), rest.end(), earlier);
  for (int i : rest) walk(i);
  return rows;
}

std::string RenderWaterfall(const v1::Trace& trace, const WaterfallOptions& options) {
  const int width = std::max(1, options.width);
  const bool unicode = options.charset == Charset::kUnicode;
  const std::string full = unicode ? "\xE2\x96\x88" : "#";  // U+2588 FULL BLOCK

  int64_t t0 = std::numeric_limits<int64_t>::max();
  int64_t t1 = std::numeric_limits<int64_t>::min();
  for (const v1::Span& span : trace.spans()) {
    t0 = std::min(t0, span.start_ns());
    t1 = std::max(t1, SpanEnd(span));
  }
  const int64_t duration = trace.spans().empty() ? 0 : t1 - t0;
  const std::string total = FormatDuration(duration, options.charset);

  std::string out = absl::StrCat("trace ", FormatId(trace.trace_id()), "  ", total, "  ",
                                 trace.spans_size(), trace.spans_size() == 1 ? " span" : " spans");
  if (trace.spans().empty()) return absl::StrCat(out, "\nno spans\n");
  absl::StrAppend(&out, "  started ", FormatTimestamp(t0, options.time_zone), "\n");

  // Scale: "|0      3.20ms|", when it fits.
  const size_t gap = static_cast<size_t>(width) >= 1 + DisplayWidth(total) + 1
                         ? width - 1 - DisplayWidth(total)
                         : 0;
  if (gap > 0) absl::StrAppend(&out, "|0", std::string(gap, ' '), total, "|\n");

  std::vector<WaterfallRow> rows = OrderSpansAsTree(trace);
  std::unordered_map<const v1::Span*, Columns> columns_of;
  std::unordered_map<uint64_t, const v1::Span*> span_by_id;
  for (const v1::Span& span : trace.spans()) span_by_id.emplace(span.span_id(), &span);

  for (const WaterfallRow& row : rows) {
    const v1::Span& span = *row.span;
    Columns columns = ColumnsOf(span.start_ns(), SpanEnd(span), t0, duration, width);
    // Rows come parent first, so the parent's columns are known: keep a child that lies
    // within its parent in time within its parent's columns too.
    auto parent = span_by_id.find(span.parent_span_id());
    if (row.depth > 0 && parent != span_by_id.end()) {
      const v1::Span& p = *parent->second;
      auto parent_columns = columns_of.find(&p);
      if (parent_columns != columns_of.end() && span.start_ns() >= p.start_ns() &&
          SpanEnd(span) <= SpanEnd(p)) {
        const Columns& pc = parent_columns->second;
        columns.first = std::clamp(columns.first, pc.first, pc.last);
        columns.last = std::clamp(columns.last, columns.first, pc.last);
      }
    }
    columns_of[&span] = columns;

    std::string line = "|";
    for (int c = 0; c < width; ++c) {
      if (c >= columns.first && c <= columns.last) {
        line += full;
      } else {
        line += ' ';
      }
    }
    absl::StrAppend(&line, "| ", std::string(2 * row.depth, ' '), span.service(), " ",
                    KindName(span.kind()), " ", span.name(), "  ",
                    FormatDuration(SpanEnd(span) - span.start_ns(), options.charset));
    absl::StrAppend(&line, WhereItRan(span));
    if (span.status() == v1::SPAN_STATUS_ERROR) {
      absl::StrAppend(&line, " ERROR");
      if (!span.status_message().empty()) absl::StrAppend(&line, " (", span.status_message(), ")");
    }
    if (row.parent_missing) {
      absl::StrAppend(&line, " [parent ", FormatId(span.parent_span_id()), " missing]");
    }
    absl::StrAppend(&out, line, "\n");
  }
  return out;
}

}  // namespace cli
}  // namespace reptrace
