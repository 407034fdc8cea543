// What one socket call costs, to be run once plainly and once under LD_PRELOAD=libreptrace.so
// (`bench/reptrace_bench.py micro` does both, alternating, and prints the difference per call).
//
// BM_TracedTcpWriteRead: a 64-byte write on a connected loopback TCP socket and the read of
//   those bytes on the accepted end, in one thread: two traced calls per iteration.
// BM_EventfdWriteRead: an 8-byte write and read on an eventfd: two calls on a non-socket fd,
//   which the hook must pass through with one table look-up.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>

#include "benchmark/benchmark.h"
#include "tests/testing/loopback.h"

namespace {

struct LoopbackPair {
  int client = -1;
  int server = -1;
  LoopbackPair() {
    if (!reptrace::testing::LoopbackTcpPair(&client, &server)) std::abort();
  }
  ~LoopbackPair() {
    close(client);
    close(server);
  }
};

void BM_TracedTcpWriteRead(benchmark::State& state) {
  LoopbackPair pair;
  char out[64] = "GET /bench HTTP/1.1\r\nHost: x\r\n\r\n";
  char in[64];
  for (auto _ : state) {
    if (write(pair.client, out, sizeof(out)) != sizeof(out)) std::abort();
    size_t got = 0;
    while (got < sizeof(in)) {
      const ssize_t n = read(pair.server, in + got, sizeof(in) - got);
      if (n <= 0) std::abort();
      got += static_cast<size_t>(n);
    }
    benchmark::DoNotOptimize(in);
  }
  state.SetItemsProcessed(state.iterations() * 2);  // calls
}
BENCHMARK(BM_TracedTcpWriteRead)->MinTime(1.0);

void BM_EventfdWriteRead(benchmark::State& state) {
  const int fd = eventfd(0, 0);
  uint64_t value = 1;
  for (auto _ : state) {
    if (write(fd, &value, sizeof(value)) != sizeof(value)) std::abort();
    if (read(fd, &value, sizeof(value)) != sizeof(value)) std::abort();
    benchmark::DoNotOptimize(value);
  }
  state.SetItemsProcessed(state.iterations() * 2);
  close(fd);
}
BENCHMARK(BM_EventfdWriteRead)->MinTime(1.0);

}  // namespace

BENCHMARK_MAIN();
