// A multithreaded client for the invisibility tests.
//
//   threaded_echo_client PORT [THREADS] [REQUESTS]
//
// THREADS threads (default 8) each open one TCP connection to 127.0.0.1:PORT and do
// REQUESTS (default 50) request/response exchanges with an echo server: send a request of
// a size and content that depend only on (thread, request), read back exactly as many
// bytes, and check them. Sizes go from a few bytes to 256 KiB, so large requests outgrow
// the socket buffers and the server has to cope with partial writes. Prints one summary
// line; exits 0 only if every response was right.
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

std::string Request(int thread, int request) {
  static const size_t kSizes[] = {1, 17, 100, 1500, 4096, 65536, 262144, 700};
  const size_t size = kSizes[(thread + request) % 8] + static_cast<size_t>(request);
  std::string out(size, '\0');
  uint32_t x = 2654435761u * static_cast<uint32_t>(thread * 1000 + request + 1);
  for (size_t i = 0; i < size; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    out[i] = static_cast<char>(x);
  }
  return out;
}

bool WriteAll(int fd, const char* data, size_t n) {
  while (n > 0) {
    const ssize_t put = write(fd, data, n);
    if (put < 0 && errno == EINTR) continue;
    if (put <= 0) return false;
    data += put;
    n -= static_cast<size_t>(put);
  }
  return true;
}

bool ReadAll(int fd, char* data, size_t n) {
  while (n > 0) {
    const ssize_t got = read(fd, data, n);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return false;
    data += got;
    n -= static_cast<size_t>(got);
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: threaded_echo_client PORT [THREADS] [REQUESTS]\n");
    return 2;
  }
  const int port = std::atoi(argv[1]);
  const int threads = argc > 2 ? std::atoi(argv[2]) : 8;
  const int requests = argc > 3 ? std::atoi(argv[3]) : 50;

  std::atomic<int> ok{0}, bad{0};
  std::atomic<unsigned long long> bytes{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_port = htons(static_cast<uint16_t>(port));
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
        std::fprintf(stderr, "thread %d: connect: %s\n", t, std::strerror(errno));
        bad += requests;
        if (fd >= 0) close(fd);
        return;
      }
      std::string response;
      for (int r = 0; r < requests; ++r) {
        const std::string request = Request(t, r);
        response.assign(request.size(), '\0');
        if (!WriteAll(fd, request.data(), request.size()) ||
            !ReadAll(fd, response.data(), response.size())) {
          std::fprintf(stderr, "thread %d request %d: I/O failed: %s\n", t, r,
                       std::strerror(errno));
          bad += requests - r;
          break;
        }
        if (response == request) {
          ++ok;
          bytes += request.size();
        } else {
          std::fprintf(stderr, "thread %d request %d: wrong response\n", t, r);
          ++bad;
        }
      }
      close(fd);
    });
  }
  for (auto& w : workers) w.join();
  std::printf("threads %d requests %d ok %d bad %d bytes %llu\n", threads, threads * requests,
              ok.load(), bad.load(), bytes.load());
  return bad.load() == 0 && ok.load() == threads * requests ? 0 : 1;
}
