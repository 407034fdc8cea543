// TLS: the plaintext of OpenSSL connections, attributed to the traced socket underneath.
//
// libreptrace.so exports SSL_read, SSL_write, SSL_read_ex, SSL_write_ex (which record the
// plaintext as kSend/kRecv events), and SSL_peek, SSL_peek_ex, SSL_do_handshake,
// SSL_connect, SSL_accept, SSL_shutdown (which record nothing but, like the four above,
// run the real call inside a TLS scope). They bind only in programs that use libssl
// dynamically; the real functions are found on the first call (tls.cc).
//
// One connection, one stream of offsets: once a traced connection carries TLS
// (ConnectionState::tls), its bytes_sent/bytes_received count plaintext only. The raw
// socket calls on it record nothing and count nothing (TlsOwnsRawBytes below), whether
// libssl makes them inside an SSL_* call or the program makes them itself, so the TLS
// records (handshake, ciphertext, alerts) are never counted next to their plaintext. Any
// plaintext the connection carried before TLS started (a STARTTLS or PostgreSQL SSLRequest
// exchange) stays at the front of the same stream, so both ends still agree on offsets.
//
// Which socket is under an SSL object: SSL_get_rfd/SSL_get_wfd when its BIO is a socket
// (nginx, python, most programs); otherwise (curl's own BIO) the traced fd that the real
// SSL_* call itself reads or writes, seen by the raw wrappers through t_tls_call, and
// remembered per SSL object for calls that move no raw bytes.
#ifndef REPTRACE_HOOK_TLS_H_
#define REPTRACE_HOOK_TLS_H_

#include <sys/types.h>

#include <atomic>
#include <cstdint>

#include "common/event_record.h"
#include "hook/connection_table.h"

namespace reptrace::hook {

// A real SSL_* call in progress on this thread.
struct TlsCall {
  int fd = -1;  // the traced fd its raw socket calls used, -1 while none
};

// Set (by tls.cc) for the duration of the outermost real SSL_* call on this thread.
extern __thread TlsCall* t_tls_call __attribute__((tls_model("initial-exec")));

// For the raw send/receive paths (interpose.cc), on a traced connection, before recording:
// true if these bytes are TLS records, whose plaintext the SSL_* wrappers record instead.
// Inside an SSL_* call this is how the connection is found to carry TLS.
inline bool TlsOwnsRawBytes(ConnectionState* state, int fd) {
  TlsCall* call = t_tls_call;
  if (call != nullptr) {
    call->fd = fd;
    if (state->tls.load(std::memory_order_relaxed) == 0) {
      state->tls.store(1, std::memory_order_relaxed);
    }
    return true;
  }
  return state->tls.load(std::memory_order_relaxed) != 0;
}

// What tls.cc needs from the socket tracing (defined in interpose.cc).
struct TlsTime {
  uint64_t mono_ns;  // CLOCK_MONOTONIC, as every record carries
};
TlsTime TlsTimeNow();
// Has the hook finished setting up (connections are being traced)?
bool TlsTracingReady();
// The state of `fd` if it is a traced connection, else nullptr.
ConnectionState* TlsFindConnection(int fd);
// Records `result` plaintext bytes (0: end of stream) moved by an SSL_* call on the
// traced connection `state` (fd `fd`), at the connection's offsets, with capture and hash.
void RecordPlaintext(ConnectionState* state, int fd, EventKind kind, const void* buf,
                     ssize_t result, const TlsTime& time);

}  // namespace reptrace::hook

#endif  // REPTRACE_HOOK_TLS_H_
