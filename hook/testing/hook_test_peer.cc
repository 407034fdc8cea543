// A program that makes one TCP connection to itself and exercises, in a fixed order, the
// calls curl and python do not: writev/readv, sendfile, the fortified read (built with
// _FORTIFY_SOURCE=2, so read() on a sized buffer becomes __read_chk), recv with MSG_PEEK,
// recvfrom, end of stream. It also makes a UDP and a Unix socket connection, which the hook
// must not trace. hook_test runs it under libreptrace.so and checks the records.
//
//   hook_test_peer 4|6 FILE      FILE: at least 1000 bytes, sent with sendfile
// Exit status 0 if every call did what it should.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "tests/testing/loopback.h"

namespace {

using reptrace::testing::LoopbackAddress;

constexpr size_t kFileBytes = 1000;

int Fail(const char* what) {
  perror(what);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  const bool v6 = argv[1][0] == '6';
  const int family = v6 ? AF_INET6 : AF_INET;

  // Not traced: a UDP "connection" and a Unix socket pair.
  int udp = socket(family, SOCK_DGRAM, 0);
  sockaddr_storage udp_addr;
  const socklen_t udp_len = LoopbackAddress(v6, 9, &udp_addr);
  if (connect(udp, reinterpret_cast<sockaddr*>(&udp_addr), udp_len) != 0) {
    return Fail("udp connect");
  }
  send(udp, "x", 1, 0);
  close(udp);
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, pair) != 0) return Fail("socketpair");
  if (write(pair[0], "unix", 4) != 4) return Fail("unix write");
  char unix_buf[8];
  if (read(pair[1], unix_buf, 4) != 4) return Fail("unix read");
  close(pair[0]);
  close(pair[1]);

  // The traced connection.
  const int listener = socket(family, SOCK_STREAM, 0);
  sockaddr_storage addr;
  socklen_t len = LoopbackAddress(v6, 0, &addr);
  if (bind(listener, reinterpret_cast<sockaddr*>(&addr), len) != 0) return Fail("bind");
  if (listen(listener, 1) != 0) return Fail("listen");
  if (getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return Fail("getsockname");
  }
  const int client = socket(family, SOCK_STREAM, 0);
  if (connect(client, reinterpret_cast<sockaddr*>(&addr), len) != 0) return Fail("connect");
  const int server = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  if (server < 0) return Fail("accept4");

  // Client -> server: writev of three pieces, readv into two.
  char p1[] = "PING ", p2[] = "vectored ", p3[] = "request\n";
  iovec out[3] = {{p1, 5}, {p2, 9}, {p3, 8}};
  if (writev(client, out, 3) != 22) return Fail("writev");
  char r1[4], r2[64];
  size_t got = 0;
  iovec in[2] = {{r1, sizeof(r1)}, {r2, sizeof(r2)}};
  while (got < 22) {  // loopback delivers it at once; the loop is for correctness only
    const ssize_t n = readv(server, in, 2);
    if (n <= 0) return Fail("readv");
    got += static_cast<size_t>(n);
  }

  // Server -> client: sendfile, read back through the fortified read.
  const int file = open(argv[2], O_RDONLY);
  if (file < 0) return Fail("open");
  off_t file_offset = 0;
  size_t sent = 0;
  while (sent < kFileBytes) {
    const ssize_t n = sendfile(server, file, &file_offset, kFileBytes - sent);
    if (n <= 0) return Fail("sendfile");
    sent += static_cast<size_t>(n);
  }
  close(file);
  char buf[4096];
  size_t want = kFileBytes;
  size_t received = 0;
  volatile size_t chunk = sizeof(buf);  // not a constant: keeps the call a __read_chk
  while (received < kFileBytes) {
    size_t ask = chunk < want - received ? chunk : want - received;
    const ssize_t n = read(client, buf, ask);
    if (n <= 0) return Fail("read");
    received += static_cast<size_t>(n);
  }

  // Client -> server again: send, peeked then received with recvfrom.
  if (send(client, "bye", 3, 0) != 3) return Fail("send");
  char bye[8];
  if (recv(server, bye, 3, MSG_PEEK | MSG_WAITALL) != 3) return Fail("recv peek");
  if (recvfrom(server, bye, 3, MSG_WAITALL, nullptr, nullptr) != 3) return Fail("recvfrom");
  if (memcmp(bye, "bye", 3) != 0) return Fail("bye");

  // End of stream.
  if (close(client) != 0) return Fail("close client");
  if (recv(server, bye, sizeof(bye), 0) != 0) return Fail("recv eof");
  if (close(server) != 0) return Fail("close server");
  close(listener);
  return 0;
}
