// Streams agent-like span batches into a running reptrace-controller over gRPC, as fast
// as it acknowledges them: the load for the controller's ingest cost
// (`reptrace_bench.py ingest`, which reads the controller's and PostgreSQL's CPU times).
//
//   ingest_load --controller HOST:PORT [--batches N] [--spans N] [--streams N]
//               [--tree-percent P] [--seed N]
//
// Each stream is one fake agent (its own agent_id) sending --batches batches of --spans
// spans, one batch in flight at a time, as the agent does. Most spans are what nginx under
// wrk produces: standalone server spans, keep-alive requests on a few connections. About
// --tree-percent of the spans belong to 4-span trees like the demo (curl -> nginx ->
// python): client and server ends of two connections plus nginx's local parent link,
// shuffled inside the batch, and every eighth tree split across two batches so that its
// ends meet in the database. Prints one line: streams, batches, spans sent, seconds.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "proto/reptrace.grpc.pb.h"

namespace {

using reptrace::v1::AgentMessage;
using reptrace::v1::ControllerMessage;
using reptrace::v1::Endpoint;
using reptrace::v1::IngestService;
using reptrace::v1::Span;
using reptrace::v1::SpanBatch;

struct Options {
  std::string controller;
  int batches = 200;
  int spans = 500;
  int streams = 1;
  int tree_percent = 10;
  uint64_t seed = 1;
};

Endpoint Ipv4(uint32_t address, uint32_t port) {
  Endpoint endpoint;
  const char ip[4] = {static_cast<char>(address >> 24), static_cast<char>(address >> 16),
                      static_cast<char>(address >> 8), static_cast<char>(address)};
  endpoint.set_ip(ip, sizeof(ip));
  endpoint.set_port(port);
  return endpoint;
}

// Generates the spans of one fake agent.
class SpanSource {
 public:
  // Runs with different seeds use different client ports (wrk's new connections), and
  // times start at the wall clock, as an agent's would.
  SpanSource(uint64_t seed, int stream)
      : rng_(seed * 1000003 + stream),
        stream_(stream),
        port_base_(static_cast<uint32_t>(seed * 131 % 50000)),
        next_port_(static_cast<uint32_t>(seed * 1009 + stream * 7919)),
        now_ns_(std::chrono::duration_cast<std::chrono::nanoseconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count()) {
    for (int i = 0; i < kConnections; ++i) offsets_[i] = 0;
  }

  // One nginx request on one of wrk's keep-alive connections.
  Span Standalone() {
    const int c = static_cast<int>(rng_() % kConnections);
    Span span = Common("nginx", 2000 + stream_, "GET /index.html");
    span.set_kind(reptrace::v1::SPAN_KIND_SERVER);
    *span.mutable_local() = Ipv4(0x7f000001, 8080);
    *span.mutable_peer() =
        Ipv4(0x7f000001, 10000 + (port_base_ + stream_ * kConnections + c) % 50000);
    span.set_request_offset(offsets_[c]);
    span.set_request_bytes(78);
    span.set_response_offset(offsets_[c] / 78 * 850);
    span.set_response_bytes(850);
    span.set_connection_id(c + 1);
    (*span.mutable_attributes())["http.method"] = "GET";
    (*span.mutable_attributes())["http.path"] = "/index.html";
    (*span.mutable_attributes())["http.status_code"] = "200";
    offsets_[c] += 78;
    return span;
  }

  // curl -> nginx -> python on two fresh connections: 4 spans.
  std::vector<Span> Tree() {
    const uint32_t curl_port = 20000 + (next_port_++ % 20000);
    const uint32_t upstream_port = 20000 + (next_port_++ % 20000);
    const Endpoint curl = Ipv4(0x0a000001, curl_port);
    const Endpoint nginx = Ipv4(0x0a000002, 80);
    const Endpoint nginx_out = Ipv4(0x0a000002, upstream_port);
    const Endpoint python = Ipv4(0x0a000003, 8000);
    std::vector<Span> spans(4);
    spans[0] = Common("curl", 3000, "GET /api");
    spans[0].set_kind(reptrace::v1::SPAN_KIND_CLIENT);
    *spans[0].mutable_local() = curl;
    *spans[0].mutable_peer() = nginx;
    spans[1] = Common("nginx", 3001, "GET /api");
    spans[1].set_kind(reptrace::v1::SPAN_KIND_SERVER);
    *spans[1].mutable_local() = nginx;
    *spans[1].mutable_peer() = curl;
    spans[2] = Common("nginx", 3001, "GET /api");
    spans[2].set_kind(reptrace::v1::SPAN_KIND_CLIENT);
    spans[2].set_parent_span_id(spans[1].span_id());
    *spans[2].mutable_local() = nginx_out;
    *spans[2].mutable_peer() = python;
    spans[3] = Common("python", 3002, "GET /api");
    spans[3].set_kind(reptrace::v1::SPAN_KIND_SERVER);
    *spans[3].mutable_local() = python;
    *spans[3].mutable_peer() = nginx_out;
    for (Span& span : spans) {
      span.set_request_bytes(80);
      span.set_response_bytes(300);
      span.set_connection_id(next_port_);
      (*span.mutable_attributes())["http.method"] = "GET";
    }
    return spans;
  }

  std::mt19937_64& rng() { return rng_; }

 private:
  static constexpr int kConnections = 8;

  Span Common(const std::string& service, uint32_t pid, const std::string& name) {
    Span span;
    span.set_span_id(rng_() | 1);
    span.set_service(service);
    span.set_node("bench");
    span.set_pid(pid);
    span.set_tid(pid);
    span.set_process(service);
    span.set_name(name);
    now_ns_ += 9'000;
    span.set_start_ns(now_ns_);
    span.set_end_ns(now_ns_ + 60'000);
    span.set_status(reptrace::v1::SPAN_STATUS_OK);
    span.set_request_hash(rng_());
    span.set_response_hash(rng_());
    return span;
  }

  std::mt19937_64 rng_;
  const int stream_;
  const uint32_t port_base_;
  uint32_t next_port_;
  int64_t now_ns_;
  uint64_t offsets_[kConnections];
};

// Sends one stream's batches; returns the number of spans acknowledged.
int64_t RunStream(const Options& options, int stream) {
  auto channel = grpc::CreateChannel(options.controller, grpc::InsecureChannelCredentials());
  auto stub = IngestService::NewStub(channel);
  grpc::ClientContext context;
  auto rpc = stub->Connect(&context);
  AgentMessage hello;
  hello.mutable_hello()->set_node("bench");
  hello.mutable_hello()->set_agent_version("ingest_load");
  hello.mutable_hello()->set_hostname("bench");
  hello.mutable_hello()->set_agent_id(
      "ingest-load-" + std::to_string(options.seed) + "-" + std::to_string(stream) + "-" +
      std::to_string(std::chrono::system_clock::now().time_since_epoch().count()));
  if (!rpc->Write(hello)) {
    std::fprintf(stderr, "ingest_load: cannot send hello\n");
    std::exit(1);
  }
  SpanSource source(options.seed, stream);
  std::vector<Span> carried;  // the second half of a tree split across batches
  int64_t acked_spans = 0;
  for (int b = 1; b <= options.batches; ++b) {
    std::vector<Span> spans = std::move(carried);
    carried.clear();
    int trees = 0;
    while (static_cast<int>(spans.size()) < options.spans) {
      const bool tree = static_cast<int>(source.rng()() % 100) < options.tree_percent / 4 &&
                        options.spans - static_cast<int>(spans.size()) >= 4;
      if (!tree) {
        spans.push_back(source.Standalone());
        continue;
      }
      std::vector<Span> four = source.Tree();
      if (++trees % 8 == 0) {
        // Servers now, their clients in the next batch.
        spans.push_back(four[1]);
        spans.push_back(four[3]);
        carried.push_back(four[0]);
        carried.push_back(four[2]);
      } else {
        for (Span& span : four) spans.push_back(std::move(span));
      }
    }
    std::shuffle(spans.begin(), spans.end(), source.rng());
    AgentMessage message;
    SpanBatch* batch = message.mutable_batch();
    batch->set_batch_id(b);
    for (Span& span : spans) *batch->add_spans() = std::move(span);
    if (!rpc->Write(message)) break;
    ControllerMessage reply;
    bool read = rpc->Read(&reply);
    while (read && reply.has_config()) read = rpc->Read(&reply);  // config pushes: ignored
    if (!read || reply.ack().batch_id() != static_cast<uint64_t>(b)) {
      std::fprintf(stderr, "ingest_load: no ack for batch %d\n", b);
      std::exit(1);
    }
    acked_spans += batch->spans_size();
  }
  rpc->WritesDone();
  ControllerMessage ignored;
  while (rpc->Read(&ignored)) {
  }
  grpc::Status status = rpc->Finish();
  if (!status.ok()) {
    std::fprintf(stderr, "ingest_load: stream ended: %s\n", status.error_message().c_str());
  }
  return acked_spans;
}

bool IntFlag(const char* arg, const char* name, int* out) {
  const size_t n = std::strlen(name);
  if (std::strncmp(arg, name, n) != 0 || arg[n] != '=') return false;
  *out = std::atoi(arg + n + 1);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    // Accept "--flag value" as well as "--flag=value".
    if (arg.rfind("--", 0) == 0 && arg.find('=') == std::string::npos && i + 1 < argc) {
      arg += "=";
      arg += argv[++i];
    }
    int seed = 0;
    if (arg.rfind("--controller=", 0) == 0) {
      options.controller = arg.substr(std::strlen("--controller="));
    } else if (IntFlag(arg.c_str(), "--batches", &options.batches) ||
               IntFlag(arg.c_str(), "--spans", &options.spans) ||
               IntFlag(arg.c_str(), "--streams", &options.streams) ||
               IntFlag(arg.c_str(), "--tree-percent", &options.tree_percent)) {
    } else if (IntFlag(arg.c_str(), "--seed", &seed)) {
      options.seed = static_cast<uint64_t>(seed);
    } else {
      std::fprintf(stderr,
                   "usage: ingest_load --controller HOST:PORT [--batches N] [--spans N] "
                   "[--streams N] [--tree-percent P] [--seed N]\n");
      return 2;
    }
  }
  if (options.controller.empty() || options.batches < 1 || options.spans < 4 ||
      options.streams < 1 || options.tree_percent < 0 || options.tree_percent > 100) {
    std::fprintf(stderr, "ingest_load: --controller is required; counts must be positive\n");
    return 2;
  }
  const auto start = std::chrono::steady_clock::now();
  std::vector<int64_t> acked(options.streams);
  std::vector<std::thread> threads;
  for (int s = 0; s < options.streams; ++s) {
    threads.emplace_back([&, s] { acked[s] = RunStream(options, s); });
  }
  int64_t total = 0;
  for (int s = 0; s < options.streams; ++s) {
    threads[s].join();
    total += acked[s];
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("streams %d batches %d spans %lld seconds %.3f\n", options.streams,
              options.batches * options.streams, static_cast<long long>(total), seconds);
  return 0;
}
