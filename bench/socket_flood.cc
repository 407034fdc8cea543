// Load for the agent flood benchmark: one process, one loopback TCP connection to itself,
// request/response of `size` bytes each way in one thread, as fast as it can, for
// `seconds`. Under the hook every iteration is four traced calls (two events per side).
//
//   socket_flood SECONDS [SIZE]     prints "iterations N"
//   socket_flood SECONDS eventfd    the same loop shape on an eventfd (write 8 bytes, read
//                                   them back): two calls per iteration on a non-socket fd
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "tests/testing/loopback.h"

using reptrace::testing::LoopbackTcpPair;
using reptrace::testing::ReadExactly;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: socket_flood SECONDS [SIZE]\n");
    return 2;
  }
  const double seconds = std::atof(argv[1]);
  const auto deadline_of = [seconds] {
    return std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  };
  if (argc > 2 && std::string(argv[2]) == "eventfd") {
    const int fd = eventfd(0, 0);
    uint64_t value = 1;
    long iterations = 0;
    for (const auto deadline = deadline_of(); std::chrono::steady_clock::now() < deadline;
         iterations += 64) {
      for (int i = 0; i < 64; ++i) {
        if (write(fd, &value, sizeof(value)) != sizeof(value) ||
            read(fd, &value, sizeof(value)) != sizeof(value)) {
          std::perror("eventfd");
          return 1;
        }
      }
    }
    close(fd);
    std::printf("iterations %ld\n", iterations);
    return 0;
  }
  const size_t size = argc > 2 ? static_cast<size_t>(std::atoi(argv[2])) : 64;
  if (seconds <= 0 || size == 0) {
    std::fprintf(stderr, "usage: socket_flood SECONDS [SIZE | eventfd]\n");
    return 2;
  }
  int client, server;
  if (!LoopbackTcpPair(&client, &server)) {
    std::perror("loopback connection");
    return 1;
  }
  std::vector<char> request(size, 'q'), response(size, 'r'), buf(size);
  const auto deadline = deadline_of();
  long iterations = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    for (int i = 0; i < 64; ++i) {
      if (write(client, request.data(), size) != static_cast<ssize_t>(size) ||
          !ReadExactly(server, buf.data(), size) ||
          write(server, response.data(), size) != static_cast<ssize_t>(size) ||
          !ReadExactly(client, buf.data(), size)) {
        std::perror("exchange");
        return 1;
      }
    }
    iterations += 64;
  }
  close(client);
  close(server);
  std::printf("iterations %ld\n", iterations);
  return 0;
}
