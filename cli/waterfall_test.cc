#include "cli/waterfall.h"

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"

namespace reptrace {
namespace cli {
namespace {

constexpr int64_t kT0 = 1'700'000'000'000'000'000;  // 2023-11-14 22:13:20 UTC
constexpr int kWidth = 40;

v1::Span MakeSpan(uint64_t id, uint64_t parent, const std::string& service, v1::SpanKind kind,
                  int64_t start_us, int64_t end_us) {
  v1::Span span;
  span.set_span_id(id);
  span.set_parent_span_id(parent);
  span.set_service(service);
  span.set_kind(kind);
  span.set_name("GET /api");
  span.set_start_ns(kT0 + start_us * 1000);
  span.set_end_ns(kT0 + end_us * 1000);
  span.set_status(v1::SPAN_STATUS_OK);
  return span;
}

// curl client -> nginx server -> nginx client -> python server, listed out of order.
v1::Trace FourSpanTrace() {
  v1::Trace trace;
  trace.set_trace_id(0xabc);
  *trace.add_spans() = MakeSpan(4, 3, "python", v1::SPAN_KIND_SERVER, 150, 850);
  *trace.add_spans() = MakeSpan(2, 1, "nginx", v1::SPAN_KIND_SERVER, 50, 950);
  *trace.add_spans() = MakeSpan(1, 0, "curl", v1::SPAN_KIND_CLIENT, 0, 1000);
  *trace.add_spans() = MakeSpan(3, 2, "nginx", v1::SPAN_KIND_CLIENT, 100, 900);
  return trace;
}

// One drawn span row, taken apart.
struct ParsedRow {
  int first = -1;  // first and last bar column
  int last = -1;
  bool contiguous = true;
  int indent = 0;     // spaces before the label
  std::string label;  // after the indentation
};

// Rows of an ASCII waterfall: the lines after the header and the scale.
std::vector<ParsedRow> ParseRows(const std::string& text, int width) {
  std::vector<std::string> lines = absl::StrSplit(text, '\n', absl::SkipEmpty());
  std::vector<ParsedRow> rows;
  for (size_t i = 2; i < lines.size(); ++i) {
    const std::string& line = lines[i];
    ParsedRow row;
    EXPECT_GE(line.size(), static_cast<size_t>(width + 3)) << line;
    EXPECT_EQ(line[0], '|') << line;
    EXPECT_EQ(line[width + 1], '|') << line;
    for (int c = 0; c < width; ++c) {
      if (line[1 + c] != '#') continue;
      if (row.first < 0) row.first = c;
      if (row.last >= 0 && row.last != c - 1) row.contiguous = false;
      row.last = c;
    }
    std::string rest = line.substr(width + 3);
    row.indent = static_cast<int>(rest.find_first_not_of(' '));
    row.label = rest.substr(row.indent);
    rows.push_back(row);
  }
  return rows;
}

WaterfallOptions Ascii() {
  WaterfallOptions options;
  options.width = kWidth;
  options.charset = Charset::kAscii;
  return options;
}

TEST(WaterfallTest, FourSpanTreeIsInTreeOrderIndentedAndNested) {
  std::string text = RenderWaterfall(FourSpanTrace(), Ascii());
  std::vector<ParsedRow> rows = ParseRows(text, kWidth);
  ASSERT_EQ(rows.size(), 4u) << text;

  EXPECT_EQ(rows[0].label, "curl client GET /api  1.00ms") << text;
  EXPECT_EQ(rows[1].label, "nginx server GET /api  900us") << text;
  EXPECT_EQ(rows[2].label, "nginx client GET /api  800us") << text;
  EXPECT_EQ(rows[3].label, "python server GET /api  700us") << text;
  for (size_t i = 1; i < rows.size(); ++i) {
    EXPECT_GT(rows[i].indent, rows[i - 1].indent) << text;
    // Each child's bar lies within its parent's columns.
    EXPECT_GE(rows[i].first, rows[i - 1].first) << text;
    EXPECT_LE(rows[i].last, rows[i - 1].last) << text;
  }
  for (const ParsedRow& row : rows) {
    EXPECT_TRUE(row.contiguous) << text;
    EXPECT_GE(row.last, row.first) << text;
  }
  // The root covers the whole timeline; the deepest span its middle 70 %.
  EXPECT_EQ(rows[0].first, 0);
  EXPECT_EQ(rows[0].last, kWidth - 1);
  EXPECT_EQ(rows[3].first, 6);  // 150/1000 * 40
  EXPECT_EQ(rows[3].last, 33);  // ceil(850/1000 * 40) - 1
}

TEST(WaterfallTest, HeaderNamesTraceDurationSpanCountAndStart) {
  std::string text = RenderWaterfall(FourSpanTrace(), Ascii());
  std::vector<std::string> lines = absl::StrSplit(text, '\n');
  EXPECT_EQ(lines[0], "trace 0000000000000abc  1.00ms  4 spans  started 2023-11-14 22:13:20.000");
  EXPECT_EQ(lines[1], "|0" + std::string(kWidth - 7, ' ') + "1.00ms|");
}

TEST(WaterfallTest, SiblingsAreOrderedByStart) {
  v1::Trace trace;
  *trace.add_spans() = MakeSpan(1, 0, "web", v1::SPAN_KIND_SERVER, 0, 100);
  *trace.add_spans() = MakeSpan(3, 1, "late", v1::SPAN_KIND_CLIENT, 60, 90);
  *trace.add_spans() = MakeSpan(2, 1, "early", v1::SPAN_KIND_CLIENT, 10, 50);
  *trace.add_spans() = MakeSpan(4, 2, "leaf", v1::SPAN_KIND_SERVER, 20, 40);
  std::vector<WaterfallRow> rows = OrderSpansAsTree(trace);
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[0].span->service(), "web");
  EXPECT_EQ(rows[1].span->service(), "early");
  EXPECT_EQ(rows[2].span->service(), "leaf");
  EXPECT_EQ(rows[3].span->service(), "late");
  EXPECT_EQ(rows[2].depth, 2);
  EXPECT_EQ(rows[3].depth, 1);
}

TEST(WaterfallTest, OrphanIsShownAtDepthZeroAndMarked) {
  v1::Trace trace = FourSpanTrace();
  *trace.add_spans() = MakeSpan(9, 0x77, "redis", v1::SPAN_KIND_SERVER, 400, 500);
  std::string text = RenderWaterfall(trace, Ascii());
  std::vector<ParsedRow> rows = ParseRows(text, kWidth);
  ASSERT_EQ(rows.size(), 5u) << text;
  EXPECT_EQ(rows[4].indent, 0) << text;
  EXPECT_EQ(rows[4].label, "redis server GET /api  100us [parent 0000000000000077 missing]")
      << text;
  EXPECT_EQ(rows[4].first, 16);
  EXPECT_EQ(rows[4].last, 19);
}

TEST(WaterfallTest, ParentCycleStillShowsEverySpanOnce) {
  v1::Trace trace;
  *trace.add_spans() = MakeSpan(1, 2, "a", v1::SPAN_KIND_SERVER, 0, 10);
  *trace.add_spans() = MakeSpan(2, 1, "b", v1::SPAN_KIND_SERVER, 5, 10);
  std::vector<WaterfallRow> rows = OrderSpansAsTree(trace);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].span->service(), "a");
  EXPECT_EQ(rows[0].depth, 0);
  EXPECT_EQ(rows[1].span->service(), "b");
  EXPECT_EQ(rows[1].depth, 1);
}

TEST(WaterfallTest, ZeroDurationTraceDrawsOneColumnBars) {
  v1::Trace trace;
  trace.set_trace_id(0x5);
  *trace.add_spans() = MakeSpan(1, 0, "a", v1::SPAN_KIND_CLIENT, 7, 7);
  *trace.add_spans() = MakeSpan(2, 1, "b", v1::SPAN_KIND_SERVER, 7, 7);
  std::string text = RenderWaterfall(trace, Ascii());
  EXPECT_TRUE(absl::StartsWith(text, "trace 0000000000000005  0ns  2 spans")) << text;
  std::vector<ParsedRow> rows = ParseRows(text, kWidth);
  ASSERT_EQ(rows.size(), 2u) << text;
  for (const ParsedRow& row : rows) {
    EXPECT_EQ(row.first, 0) << text;
    EXPECT_EQ(row.last, 0) << text;
  }
  EXPECT_EQ(rows[1].label, "b server GET /api  0ns");
}

TEST(WaterfallTest, TinySpanInLongTraceGetsOneColumnInsideItsParent) {
  v1::Trace trace;
  *trace.add_spans() = MakeSpan(1, 0, "a", v1::SPAN_KIND_CLIENT, 0, 1'000'000);
  *trace.add_spans() = MakeSpan(2, 1, "b", v1::SPAN_KIND_SERVER, 999'999, 1'000'000);
  *trace.add_spans() = MakeSpan(3, 2, "c", v1::SPAN_KIND_SERVER, 1'000'000, 1'000'000);
  std::vector<ParsedRow> rows = ParseRows(RenderWaterfall(trace, Ascii()), kWidth);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[1].first, kWidth - 1);
  EXPECT_EQ(rows[1].last, kWidth - 1);
  EXPECT_EQ(rows[2].first, kWidth - 1);
  EXPECT_EQ(rows[2].last, kWidth - 1);
}

TEST(WaterfallTest, InstantChildAtItsParentsEndStaysInsideItsParentsColumns) {
  v1::Trace trace;
  *trace.add_spans() = MakeSpan(1, 0, "long", v1::SPAN_KIND_CLIENT, 0, 1000);
  *trace.add_spans() = MakeSpan(2, 0, "half", v1::SPAN_KIND_CLIENT, 0, 500);  // columns 0-19
  *trace.add_spans() = MakeSpan(3, 2, "instant", v1::SPAN_KIND_SERVER, 500, 500);
  std::string text = RenderWaterfall(trace, Ascii());
  std::vector<ParsedRow> rows = ParseRows(text, kWidth);
  ASSERT_EQ(rows.size(), 3u) << text;
  EXPECT_EQ(rows[1].label, "half client GET /api  500us") << text;
  EXPECT_EQ(rows[1].first, 0);
  EXPECT_EQ(rows[1].last, 19);
  EXPECT_EQ(rows[2].first, 19) << text;
  EXPECT_EQ(rows[2].last, 19) << text;
}

TEST(WaterfallTest, FailedSpanIsMarkedError) {
  v1::Trace trace = FourSpanTrace();
  trace.mutable_spans(0)->set_status(v1::SPAN_STATUS_ERROR);  // python
  trace.mutable_spans(0)->set_status_message("HTTP 500");
  std::vector<ParsedRow> rows = ParseRows(RenderWaterfall(trace, Ascii()), kWidth);
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[3].label, "python server GET /api  700us ERROR (HTTP 500)");
  EXPECT_FALSE(absl::StrContains(rows[2].label, "ERROR"));
}

TEST(WaterfallTest, SpansInPodsOrContainersSayWhere) {
  v1::Trace trace = FourSpanTrace();
  auto& python = *trace.mutable_spans(0)->mutable_attributes();
  python["k8s.pod.name"] = "api-5c7d";
  python["k8s.namespace.name"] = "shop";
  python["container.id"] = std::string(64, 'c');
  // nginx's client span: a container the API server did not name.
  (*trace.mutable_spans(3)->mutable_attributes())["container.id"] = "0123456789abcdef" +
                                                                     std::string(48, '0');
  trace.mutable_spans(0)->set_status(v1::SPAN_STATUS_ERROR);
  std::vector<ParsedRow> rows = ParseRows(RenderWaterfall(trace, Ascii()), kWidth);
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[0].label, "curl client GET /api  1.00ms");
  EXPECT_EQ(rows[2].label, "nginx client GET /api  800us  (container 0123456789ab)");
  EXPECT_EQ(rows[3].label, "python server GET /api  700us  (pod shop/api-5c7d) ERROR");
}

TEST(WaterfallTest, AsciiIsPureAsciiAndUnicodeUsesBlocks) {
  std::string ascii = RenderWaterfall(FourSpanTrace(), Ascii());
  for (char c : ascii) EXPECT_LT(static_cast<unsigned char>(c), 0x80) << ascii;

  WaterfallOptions options = Ascii();
  options.charset = Charset::kUnicode;
  std::string unicode = RenderWaterfall(FourSpanTrace(), options);
  EXPECT_TRUE(absl::StrContains(unicode, "\xE2\x96\x88")) << unicode;  // U+2588
  EXPECT_TRUE(absl::StrContains(unicode, "700\xC2\xB5s")) << unicode;
  EXPECT_FALSE(absl::StrContains(unicode, "#")) << unicode;
}

TEST(WaterfallTest, WidthOptionSetsTimelineColumns) {
  WaterfallOptions options = Ascii();
  options.width = 12;
  std::string text = RenderWaterfall(FourSpanTrace(), options);
  std::vector<ParsedRow> rows = ParseRows(text, 12);
  ASSERT_EQ(rows.size(), 4u) << text;
  EXPECT_EQ(rows[0].first, 0);
  EXPECT_EQ(rows[0].last, 11);
}

TEST(WaterfallTest, EmptyTraceSaysNoSpans) {
  v1::Trace trace;
  trace.set_trace_id(0x1);
  EXPECT_EQ(RenderWaterfall(trace, Ascii()), "trace 0000000000000001  0ns  0 spans\nno spans\n");
}

}  // namespace
}  // namespace cli
}  // namespace reptrace
