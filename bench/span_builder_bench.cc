// The agent's cost per span of labelling it with its workload (agent/workload.h): the span
// builder turning a keep-alive HTTP server's records into spans, and the sink writing
// each span's wire bytes (as SpanBuffer::Add does), for a process in no container and for
// one in a named pod (five more attributes per span). Run side by side in one binary:
//   build/bench/span_builder_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <string>
#include <vector>

#include "agent/span_builder.h"
#include "agent/span_wire.h"
#include "agent/testing/hook_script.h"
#include "benchmark/benchmark.h"

namespace reptrace {
namespace {

constexpr int kExchanges = 1000;  // per connection, per benchmark iteration

void BM_ServerSpans(benchmark::State& state) {
  const bool in_pod = state.range(0) != 0;
  std::string wire;
  size_t spans = 0;
  size_t wire_bytes = 0;
  SpanBuilder builder("node-a", [&](const SpanRecord& span) {
    wire.resize(SpanWireSizeBound(span));
    auto* begin = reinterpret_cast<uint8_t*>(&wire[0]);
    uint8_t* end = WriteSpanWire(span, begin);
    benchmark::DoNotOptimize(end);
    wire_bytes = static_cast<size_t>(end - begin);
    ++spans;
  });
  testing::HookScript script(4242);
#ifndef REPTRACE_BENCH_BASELINE
  Workload workload;
  if (in_pod) {
    workload.container_id = std::string(64, 'a');
    workload.pod_uid = "5f0a1c3e-8f2b-4d6a-9c1e-2b3d4e5f6a7b";
    workload.pod_name = "web-7d9f5c6b8-x2x9q";
    workload.pod_namespace = "shop";
    workload.container_name = "web";
  }
#endif
#ifdef REPTRACE_BENCH_BASELINE  // a tree from before workloads: built as its baseline
  builder.OnHello(1, script.Hello("web", "nginx"));
#else
  builder.OnHello(1, script.Hello("web", "nginx"), workload);
#endif
  // The records of one connection's life, made once: what the hook server hands over.
  const std::string request = "GET /index.html HTTP/1.1\r\nHost: web\r\n\r\n";
  const std::string response = "HTTP/1.1 200 OK\r\nContent-Length: 612\r\n\r\n";
  const absl::Time now = absl::FromUnixSeconds(1700000000);
  const EventRecord accept = script.Accept(7, 3, 1000);
  std::vector<DataRecord> exchanges;
  for (int i = 0; i < kExchanges; ++i) {
    exchanges.push_back(script.Recv(7, 3, 2000 + 10 * i, request));
    exchanges.push_back(script.Send(7, 3, 2005 + 10 * i, response));
  }
  const EventRecord close = script.Close(7, 3, 2000 + 10 * kExchanges);
  for (auto _ : state) {
    builder.OnEvent(1, accept, now);
    for (const DataRecord& record : exchanges) builder.OnData(1, record, now);
    builder.OnEvent(1, close, now);
  }
  state.SetItemsProcessed(static_cast<int64_t>(spans));
  state.counters["wire_bytes_per_span"] = static_cast<double>(wire_bytes);
}
#ifdef REPTRACE_BENCH_BASELINE
BENCHMARK(BM_ServerSpans)->ArgName("in_pod")->Arg(0);
#else
BENCHMARK(BM_ServerSpans)->ArgName("in_pod")->Arg(0)->Arg(1);
#endif

}  // namespace
}  // namespace reptrace

BENCHMARK_MAIN();
