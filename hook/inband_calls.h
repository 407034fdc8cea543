// In-band mode on real sockets (the frames: hook/inband.h). The interposed calls hand a
// call on a traced connection whose in-band state is active to these, which make the real
// system calls, frame or strip, and return what the program must see: the program's own
// bytes and counts, errno as the real call would leave it.
//
// They never spin: on a non-blocking socket (O_NONBLOCK or MSG_DONTWAIT) a call that could
// move only header bytes returns -1/EAGAIN (the kernel had nothing more), and the rest of
// the header goes first the next time. On a blocking socket such a call goes on, as the
// program's own call would have blocked. A short read or write is what it would have been
// without framing (or shorter: a call never reads or writes past 63 of the program's
// iovecs, and a read never reads more than the program asked for). The ids a header
// carries go to the agent as InbandRecords (common/event_record.h).
//
// Limits:
//  - urgent data (MSG_OOB) passes unframed, and a receiver with SO_OOBINLINE on a framed
//    connection would see it counted wrongly;
//  - bytes that reach a framed socket without a libc call the hook interposes (splice,
//    io_uring) go unframed, and the receiver stops stripping at the first one (a header
//    that fails its check);
//  - a connection handed to another program across exec() loses its framing state (the
//    new program's hook does not know the fd);
//  - ioctl(FIONREAD) and poll() count header bytes too: a program may find fewer bytes
//    than announced, or (non-blocking) EAGAIN after a wake-up for a header alone;
//  - MSG_TRUNC on a framed stream reads at most 4 KiB per call.
#ifndef REPTRACE_HOOK_INBAND_CALLS_H_
#define REPTRACE_HOOK_INBAND_CALLS_H_

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <cstdint>

#include "hook/connection_table.h"
#include "hook/inband.h"

namespace reptrace::hook {

// Reads REPTRACE_INBAND_PORTS and seeds the span ids. Library constructor only.
void ConfigureInband();
// The fork child's span ids must differ from its parent's.
void ReseedInbandAfterFork();

// The in-band modes a new connection starts with: a TCP client the config traces
// (`reporting`) to an in-band port (REPTRACE_INBAND_PORTS or the config page's) may frame;
// every TCP server connection looks for frames, traced or not (a framed request must reach
// the program without its header whatever the config says); anything else is plain.
void InbandModesFor(uint8_t role, const Endpoints& endpoints, bool reporting,
                    inband::Mode* send_mode, inband::Mode* receive_mode);

inline bool InbandActive(const ConnectionState* state) {
  return state->inband.active.load(std::memory_order_relaxed) != 0;
}

// recvmsg() on `fd`, in-band: into the program's `iov` with the program's `flags`
// (MSG_PEEK shows payload without taking it); `msg` (or nullptr) is the program's msghdr,
// whose name, control and flags are filled as recvmsg fills them. Returns the payload
// bytes moved (0 at end of stream), or -1 with errno.
ssize_t InbandReceive(ConnectionState* state, int fd, const iovec* iov, int iovcnt, int flags,
                      msghdr* msg);

// sendmsg() on `fd`, in-band: the program's `iov`, `flags` and `msg` (name and control, or
// nullptr). Returns the program bytes sent, or -1 with errno.
ssize_t InbandSend(ConnectionState* state, int fd, const iovec* iov, int iovcnt, int flags,
                   const msghdr* msg);

// sendfile()/sendfile64() on `out_fd`, in-band (a header first, then the file's bytes).
ssize_t InbandSendfile(ConnectionState* state, int out_fd, int in_fd, off64_t* offset,
                       size_t count);

// What interpose.cc provides: the connection's open record reaches the agent before the
// InbandRecords of the connection do (see RecordTransfer).
void EnsureAnnounced(ConnectionState* state, int fd);

}  // namespace reptrace::hook

#endif  // REPTRACE_HOOK_INBAND_CALLS_H_
