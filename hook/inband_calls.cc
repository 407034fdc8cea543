#include "hook/inband_calls.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

#include "common/event_record.h"
#include "hook/agent_link.h"
#include "hook/process_state.h"
#include "hook/real_calls.h"
#include "hook/settings.h"

namespace reptrace::hook {
namespace {

using inband::Header;
using inband::kHeaderBytes;
using inband::Mode;

// At most this many iovecs per real call: one for a header and 63 of the program's.
constexpr int kMaxIov = 64;
constexpr size_t kTruncScratch = 4096;

inband::PortSet g_ports;
inband::UnhookedPeers g_unhooked;
uint64_t g_id_seed = 0;
std::atomic<uint64_t> g_id_counter{0};

// The trace of the last framed request this thread received (0: none): the trace its
// outgoing requests carry.
__thread uint64_t t_trace __attribute__((tls_model("initial-exec"))) = 0;

uint64_t RandomSeed() {
  uint64_t seed = 0;
  if (syscall(SYS_getrandom, &seed, sizeof(seed), 0) != static_cast<long>(sizeof(seed))) {
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    seed = (uint64_t(ts.tv_sec) << 32) ^ uint64_t(ts.tv_nsec) ^ (uint64_t(getpid()) << 48);
  }
  return seed;
}

// A span id: SplitMix64 over a per-process random seed and a counter (never 0).
uint64_t NewId() {
  uint64_t z = g_id_seed + g_id_counter.fetch_add(0x9e3779b97f4a7c15ULL, std::memory_order_relaxed);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  return z == 0 ? 1 : z;
}

bool NonBlocking(int fd, int flags) {
  if ((flags & MSG_DONTWAIT) != 0) return true;
  const int fl = RealFcntl(fd, F_GETFL, nullptr);
  return fl >= 0 && (fl & O_NONBLOCK) != 0;
}

void Report(ConnectionState* state, int fd, InbandEvent event, uint64_t offset,
            uint64_t trace_id, uint64_t span_id) {
  const int saved = errno;
  {
    InHookScope scope;
    EnsureAnnounced(state, fd);
    InbandRecord r;
    std::memset(&r, 0, sizeof(r));
    r.header = {kRecordMagic, static_cast<uint16_t>(RecordType::kInband),
                static_cast<uint16_t>(sizeof(r))};
    r.event = static_cast<uint8_t>(event);
    r.tid = CurrentTid();
    r.conn_id = state->conn_id.load(std::memory_order_acquire);
    r.offset = offset;
    r.trace_id = trace_id;
    r.span_id = span_id;
    Publish(&r, sizeof(r));
  }
  errno = saved;
}

// A header received on this thread: its ids go to the agent, and a request's trace
// becomes this thread's.
void OnReceivedHeader(ConnectionState* state, int fd, uint64_t offset, const Header& header) {
  if ((header.flags & inband::kFlagResponse) != 0) return;  // a response: nothing new
  t_trace = header.trace_id;
  Report(state, fd, InbandEvent::kReceived, offset, header.trace_id, header.span_id);
}

struct StripContext {
  ConnectionState* state;
  int fd;
  uint64_t base;  // receive offset of the first payload byte of this call
};

void FrameSeen(void* context, size_t payload_at, const Header& header) {
  auto* c = static_cast<StripContext*>(context);
  OnReceivedHeader(c->state, c->fd, c->base + payload_at, header);
}

// The program's iovecs from byte `skip` on, at most `limit` bytes and `room` entries, into
// `out`; returns the entries written and their bytes in `*bytes`.
int Slice(const iovec* iov, int iovcnt, size_t skip, size_t limit, iovec* out, int room,
          size_t* bytes) {
  if (iovcnt == 1 && room > 0 && skip <= iov[0].iov_len) {  // read/write/send/recv
    size_t len = iov[0].iov_len - skip;
    if (len > limit) len = limit;
    *bytes = len;
    if (len == 0) return 0;
    out[0] = {static_cast<char*>(iov[0].iov_base) + skip, len};
    return 1;
  }
  int n = 0;
  size_t total = 0;
  for (int i = 0; i < iovcnt && n < room && total < limit; ++i) {
    size_t len = iov[i].iov_len;
    char* base = static_cast<char*>(iov[i].iov_base);
    if (skip >= len) {
      skip -= len;
      continue;
    }
    base += skip;
    len -= skip;
    skip = 0;
    if (len > limit - total) len = limit - total;
    if (len == 0) continue;
    out[n++] = {base, len};
    total += len;
  }
  *bytes = total;
  return n;
}

// The receive side found the peer's first bytes unframed.
void ReceiveBecomesPlain(ConnectionState* state, int fd) {
  inband::State& ib = state->inband;
  ib.receive.mode = Mode::kPlain;
  if (state->role == static_cast<uint8_t>(SocketRole::kClient)) {
    if (ib.send.mode == Mode::kFramed) {
      // We framed and the server did not answer in frames: it is not hooked, or it spoke
      // before our first frame reached it (a greeting). This connection goes on framed: a
      // hooked server that greeted first strips our frames, and an unhooked one has had our
      // header already. The destination's next connections go unframed.
      g_unhooked.Add(inband::UnhookedPeers::Key(state->endpoints.peer_addr,
                                                state->endpoints.peer_port));
      Report(state, fd, InbandEvent::kPeerNotHooked,
             state->bytes_received.load(std::memory_order_relaxed), 0, 0);
    }
  } else if (ib.send.mode == Mode::kUndecided) {
    ib.send.mode = Mode::kPlain;  // a client that does not frame gets no frames
  }
  ib.Refresh();
}

// Held bytes that turned out to be the program's: handed over (or, peeking, shown).
ssize_t DeliverHeld(ConnectionState* state, const iovec* iov, int iovcnt, bool peek,
                    msghdr* msg) {
  inband::ReceiveState& rx = state->inband.receive;
  size_t room = 0;
  for (int i = 0; i < iovcnt; ++i) room += iov[i].iov_len;
  size_t n = rx.have < room ? rx.have : room;
  inband::IovBytes(iov, iovcnt).CopyIn(0, n, rx.header);
  if (!peek) {
    std::memmove(rx.header, rx.header + n, rx.have - n);
    rx.have = static_cast<uint8_t>(rx.have - n);
    state->inband.Refresh();
  }
  if (msg != nullptr) {
    msg->msg_namelen = 0;
    msg->msg_controllen = 0;
    msg->msg_flags = 0;
  }
  return static_cast<ssize_t>(n);
}

ssize_t RecvInto(int fd, iovec* v, int vc, int flags, msghdr* msg) {
  msghdr m = {};
  m.msg_iov = v;
  m.msg_iovlen = static_cast<size_t>(vc);
  if (msg != nullptr) {
    m.msg_name = msg->msg_name;
    m.msg_namelen = msg->msg_namelen;
    m.msg_control = msg->msg_control;
    m.msg_controllen = msg->msg_controllen;
  }
  const ssize_t r = RealRecvmsg(fd, &m, flags);
  if (msg != nullptr && r >= 0) {
    msg->msg_namelen = m.msg_namelen;
    msg->msg_controllen = m.msg_controllen;
    msg->msg_flags = m.msg_flags;
  }
  return r;
}

// The first bytes of a connection (kUndecided, none held) arrived in the program's
// buffers: returns how they decided (kNeedMore: they are held now).
inband::Detected DetectInPlace(ConnectionState* state, int fd, const inband::IovBytes& bytes,
                               size_t n) {
  inband::ReceiveState& rx = state->inband.receive;
  uint8_t first[kHeaderBytes];
  const size_t k = n < kHeaderBytes ? n : kHeaderBytes;
  bytes.CopyOut(0, k, first);
  const inband::Detected detected = inband::DetectFrames(first, k);
  switch (detected) {
    case inband::Detected::kPlain:
      ReceiveBecomesPlain(state, fd);
      break;
    case inband::Detected::kNeedMore:
      std::memcpy(rx.header, first, k);
      rx.have = static_cast<uint8_t>(k);
      state->inband.Refresh();
      break;
    case inband::Detected::kFramed:
      rx.mode = Mode::kFramed;
      rx.have = 0;
      rx.frame_remaining = 0;
      break;
  }
  return detected;
}

// kUndecided with a header prefix held: reads more of it into rx.header (never into the
// program's buffers, which could not take the held bytes back if they are the program's).
// Returns -1 with errno, 0 at end of stream, 1 if it got fewer bytes than it asked for
// (the socket is drained), 2 if it got them all (more may be waiting); decides the mode
// when it can.
int ReadMoreOfFirstHeader(ConnectionState* state, int fd, int flags) {
  inband::ReceiveState& rx = state->inband.receive;
  // Up to the magic first, so that a plain stream gives up at most 4 bytes.
  const size_t want = (rx.have < 4 ? 4 : kHeaderBytes) - rx.have;
  const ssize_t k =
      RealRecv(fd, rx.header + rx.have, want, flags & ~(MSG_PEEK | MSG_WAITALL | MSG_TRUNC));
  if (k < 0) return -1;
  if (k == 0) {
    ReceiveBecomesPlain(state, fd);  // what was held is the program's
    return 0;
  }
  rx.have = static_cast<uint8_t>(rx.have + k);
  const int drained = static_cast<size_t>(k) < want ? 1 : 2;
  if (!inband::MagicPrefix(rx.header, rx.have)) {
    ReceiveBecomesPlain(state, fd);
  } else if (rx.have == kHeaderBytes) {
    Header header;
    bool new_request = false;
    if (inband::TakeHeader(&rx, &header, &new_request)) {
      rx.mode = Mode::kFramed;
      OnReceivedHeader(state, fd, state->bytes_received.load(std::memory_order_relaxed),
                       header);
      state->inband.Refresh();
    } else {
      ReceiveBecomesPlain(state, fd);
    }
  }
  return drained;
}

// kUndecided with a header prefix held, in a receive: reads more of it (above). -1 with
// errno: return that to the program (EAGAIN on a non-blocking socket still undecided and
// drained: a program on edge-triggered epoll waits for new bytes only after an EAGAIN
// that means the socket is empty); 0: go on.
int ContinueFirstHeader(ConnectionState* state, int fd, int flags) {
  const int r = ReadMoreOfFirstHeader(state, fd, flags);
  if (r < 0) return -1;
  if (r == 1 && state->inband.receive.mode == Mode::kUndecided && NonBlocking(fd, flags)) {
    errno = EAGAIN;
    return -1;
  }
  return 0;
}

// A framed stream broke (a header failed its check): nothing after it can be trusted to be
// framed; it is handed over as it comes.
void Desynchronized(ConnectionState* state) {
  state->inband.receive.mode = Mode::kPlain;
  state->inband.receive.have = 0;
  state->inband.Refresh();
}

ssize_t Peek(ConnectionState* state, int fd, const iovec* iov, int iovcnt, int flags,
             msghdr* msg) {
  inband::ReceiveState& rx = state->inband.receive;
  const int take_flags = flags & ~(MSG_PEEK | MSG_WAITALL | MSG_TRUNC);
  iovec prog[kMaxIov];
  size_t total = 0;
  const int progcnt = Slice(iov, iovcnt, 0, SIZE_MAX, prog, kMaxIov, &total);
  for (;;) {
    if (rx.mode == Mode::kPlain) {
      if (rx.have > 0) return DeliverHeld(state, prog, progcnt, /*peek=*/true, msg);
      return RecvInto(fd, prog, progcnt, flags, msg);
    }
    if (rx.mode == Mode::kUndecided) {
      if (rx.have == 0) {
        const ssize_t r = RecvInto(fd, prog, progcnt, flags, msg);
        if (r <= 0) return r;
        const inband::Detected d =
            DetectInPlace(state, fd, inband::IovBytes(prog, progcnt), static_cast<size_t>(r));
        if (d == inband::Detected::kPlain) return r;
        if (d == inband::Detected::kNeedMore) {
          // Held now: take them out of the socket (they are there: just peeked).
          const ssize_t k = RealRecv(fd, rx.header, rx.have, MSG_DONTWAIT);
          if (k != rx.have) {  // cannot happen on a stream we alone read; stay safe
            rx.have = 0;
            ReceiveBecomesPlain(state, fd);
            continue;
          }
          // EAGAIN only if the peek found the socket drained (see ContinueFirstHeader).
          if (static_cast<size_t>(r) < total && NonBlocking(fd, flags)) {
            errno = EAGAIN;
            return -1;
          }
        }
        continue;  // kFramed: nothing taken yet; the framed path below
      }
      if (ContinueFirstHeader(state, fd, flags) < 0) return -1;
      continue;
    }
    // Framed: the next header is taken for real (the program never sees it), then the
    // current frame's payload is peeked.
    if (rx.frame_remaining == 0) {
      const ssize_t k = RealRecv(fd, rx.header + rx.have, kHeaderBytes - rx.have, take_flags);
      if (k <= 0) return k;
      rx.have = static_cast<uint8_t>(rx.have + k);
      if (rx.have < kHeaderBytes) {
        if (NonBlocking(fd, flags)) {
          errno = EAGAIN;
          return -1;
        }
        continue;
      }
      Header header;
      bool new_request = false;
      if (!inband::TakeHeader(&rx, &header, &new_request)) {
        Desynchronized(state);
        continue;
      }
      if (new_request) {
        OnReceivedHeader(state, fd, state->bytes_received.load(std::memory_order_relaxed),
                         header);
      }
      continue;
    }
    iovec v[kMaxIov];
    size_t asked = 0;
    const int vc = Slice(prog, progcnt, 0, rx.frame_remaining, v, kMaxIov, &asked);
    return RecvInto(fd, v, vc, flags, msg);
  }
}

}  // namespace

void ConfigureInband() {
  // A malformed list frames nothing (the safe side) rather than part of what was meant.
  if (!g_ports.Parse(getenv("REPTRACE_INBAND_PORTS"))) g_ports.Parse(nullptr);
  g_id_seed = RandomSeed();
}

void ReseedInbandAfterFork() {
  g_id_seed = RandomSeed();
  t_trace = 0;
}

void InbandModesFor(uint8_t role, const Endpoints& endpoints, bool reporting,
                    Mode* send_mode, Mode* receive_mode) {
  *send_mode = Mode::kPlain;
  *receive_mode = Mode::kPlain;
  if (endpoints.protocol != IPPROTO_TCP || endpoints.family == kFamilyUnix) return;
  if (role == static_cast<uint8_t>(SocketRole::kServer)) {
    *send_mode = Mode::kUndecided;
    *receive_mode = Mode::kUndecided;
  } else if (role == static_cast<uint8_t>(SocketRole::kClient) && reporting &&
             ((!g_ports.empty() && g_ports.Contains(endpoints.peer_port)) ||
              PageInbandPort(endpoints.peer_port))) {
    *send_mode = Mode::kUndecided;
  }
}

namespace {

ssize_t ReceiveFramed(ConnectionState* state, int fd, const iovec* iov, int iovcnt, int flags,
                      msghdr* msg);

// MSG_TRUNC asks the kernel to drop the bytes; the headers among them must still be found,
// so they are read into a scratch buffer (at most kTruncScratch bytes per call).
__attribute__((noinline)) ssize_t ReceiveTruncated(ConnectionState* state, int fd,
                                                   const iovec* iov, int iovcnt, int flags,
                                                   msghdr* msg) {
  uint8_t scratch[kTruncScratch];
  size_t want = 0;
  for (int i = 0; i < iovcnt; ++i) want += iov[i].iov_len;
  iovec v = {scratch, want < kTruncScratch ? want : kTruncScratch};
  return ReceiveFramed(state, fd, &v, 1, flags & ~MSG_TRUNC, msg);
}

}  // namespace

ssize_t InbandReceive(ConnectionState* state, int fd, const iovec* iov, int iovcnt, int flags,
                      msghdr* msg) {
  if ((flags & MSG_PEEK) != 0) return Peek(state, fd, iov, iovcnt, flags, msg);
  if ((flags & MSG_TRUNC) != 0) return ReceiveTruncated(state, fd, iov, iovcnt, flags, msg);
  return ReceiveFramed(state, fd, iov, iovcnt, flags, msg);
}

namespace {

ssize_t ReceiveFramed(ConnectionState* state, int fd, const iovec* iov, int iovcnt, int flags,
                      msghdr* msg) {
  inband::State& ib = state->inband;
  inband::ReceiveState& rx = ib.receive;
  iovec prog[kMaxIov];
  size_t total = 0;
  const int progcnt = Slice(iov, iovcnt, 0, SIZE_MAX, prog, kMaxIov - 1, &total);
  if (rx.mode == Mode::kPlain) {
    if (rx.have > 0) return DeliverHeld(state, prog, progcnt, /*peek=*/false, msg);
    return RecvInto(fd, prog, progcnt, flags, msg);
  }
  if (total == 0) return RecvInto(fd, prog, progcnt, flags, msg);
  const bool wait_all = (flags & MSG_WAITALL) != 0;
  size_t delivered = 0;  // payload bytes already in the program's buffers
  for (;;) {
    if (rx.mode == Mode::kPlain) {
      if (delivered > 0) return static_cast<ssize_t>(delivered);
      if (rx.have > 0) return DeliverHeld(state, prog, progcnt, /*peek=*/false, msg);
      return RecvInto(fd, prog, progcnt, flags, msg);
    }
    if (rx.mode == Mode::kUndecided && rx.have > 0) {
      if (ContinueFirstHeader(state, fd, flags) < 0) return -1;
      continue;
    }
    iovec v[kMaxIov];
    int vc = 0;
    size_t ask_header = 0;
    if (rx.mode == Mode::kFramed && rx.frame_remaining == 0) {
      ask_header = kHeaderBytes - rx.have;
      v[vc++] = {rx.header + rx.have, ask_header};
    }
    size_t ask_program = 0;
    vc += Slice(prog, progcnt, delivered, SIZE_MAX, v + vc, kMaxIov - vc, &ask_program);
    const ssize_t r = RecvInto(fd, v, vc, flags, msg);
    if (r < 0) return delivered > 0 ? static_cast<ssize_t>(delivered) : -1;
    if (r == 0) return static_cast<ssize_t>(delivered);  // end of stream
    const size_t got_header = static_cast<size_t>(r) < ask_header ? r : ask_header;
    const size_t got_program = static_cast<size_t>(r) - got_header;
    const inband::IovBytes program(v + (ask_header > 0 ? 1 : 0), vc - (ask_header > 0 ? 1 : 0));
    StripContext context{state, fd,
                         state->bytes_received.load(std::memory_order_relaxed) + delivered};
    size_t payload = 0;
    bool bad = false;
    if (rx.mode == Mode::kUndecided) {
      const inband::Detected d = DetectInPlace(state, fd, program, got_program);
      if (d == inband::Detected::kPlain) return static_cast<ssize_t>(delivered + got_program);
      if (d == inband::Detected::kFramed) {
        payload = inband::StripFrames(&rx, program, got_program, FrameSeen, &context, &bad);
        ib.Refresh();
      }
    } else {
      rx.have = static_cast<uint8_t>(rx.have + got_header);
      if (rx.have == kHeaderBytes) {
        Header header;
        bool new_request = false;
        if (!inband::TakeHeader(&rx, &header, &new_request)) {
          Desynchronized(state);
          bad = true;
        } else if (new_request) {
          OnReceivedHeader(state, fd, context.base, header);
        }
      }
      if (!bad) {
        payload = inband::StripFrames(&rx, program, got_program, FrameSeen, &context, &bad);
      }
    }
    if (bad) Desynchronized(state);
    delivered += payload;
    if (delivered > 0 && !(wait_all && delivered < total)) {
      return static_cast<ssize_t>(delivered);
    }
    if (static_cast<size_t>(r) == ask_header + ask_program) continue;  // there may be more
    if (NonBlocking(fd, flags)) {
      if (delivered > 0) return static_cast<ssize_t>(delivered);
      errno = EAGAIN;
      return -1;
    }
  }
}

// The send side's first call decides whether it frames (see inband.h).
void DecideSend(ConnectionState* state) {
  inband::State& ib = state->inband;
  if (state->role == static_cast<uint8_t>(SocketRole::kServer)) {
    ib.send.mode = ib.receive.mode == Mode::kFramed ? Mode::kFramed : Mode::kPlain;
  } else if (state->bytes_received.load(std::memory_order_relaxed) > 0 ||
             g_unhooked.Contains(inband::UnhookedPeers::Key(state->endpoints.peer_addr,
                                                            state->endpoints.peer_port))) {
    ib.send.mode = Mode::kPlain;  // the server spoke first, or is known not to be hooked
  } else {
    ib.send.mode = Mode::kFramed;
    ib.receive.mode = Mode::kUndecided;  // its answer tells whether it is hooked
    ib.receive.have = 0;
  }
  ib.Refresh();
}

// Starts a frame of `payload` bytes: its header becomes pending. Returns whether it begins
// a new request (a client's: its ids are new, and reported once the header goes out).
bool BeginFrame(ConnectionState* state, size_t payload) {
  inband::State& ib = state->inband;
  Header header;
  header.payload_len = payload > 0xffffffffu ? 0xffffffffu : static_cast<uint32_t>(payload);
  bool new_request = false;
  if (state->role == static_cast<uint8_t>(SocketRole::kServer)) {
    header.flags = inband::kFlagResponse;
    header.trace_id = ib.receive.trace_id;
    header.span_id = ib.receive.span_id;
  } else {
    if (ib.send.span_id == 0 || state->last_direction.load(std::memory_order_relaxed) !=
                                    static_cast<uint8_t>(EventKind::kSend)) {
      ib.send.span_id = NewId();
      ib.send.trace_id = t_trace != 0 ? t_trace : ib.send.span_id;
      new_request = true;
    }
    header.trace_id = ib.send.trace_id;
    header.span_id = ib.send.span_id;
  }
  inband::EncodeHeader(header, ib.send.pending);
  ib.send.pending_len = kHeaderBytes;
  ib.send.frame_remaining = header.payload_len;
  return new_request;
}

ssize_t PlainSend(int fd, const iovec* iov, int iovcnt, int flags, const msghdr* msg) {
  msghdr m = {};
  if (msg != nullptr) m = *msg;
  m.msg_iov = const_cast<iovec*>(iov);
  m.msg_iovlen = static_cast<size_t>(iovcnt);
  return RealSendmsg(fd, &m, flags);
}

}  // namespace

ssize_t InbandSend(ConnectionState* state, int fd, const iovec* iov, int iovcnt, int flags,
                   const msghdr* msg) {
  inband::SendState& tx = state->inband.send;
  if (tx.mode == Mode::kUndecided) DecideSend(state);
  if (tx.mode == Mode::kPlain || (flags & MSG_OOB) != 0) {
    return PlainSend(fd, iov, iovcnt, flags, msg);
  }
  iovec prog[kMaxIov];
  size_t total = 0;
  const int progcnt = Slice(iov, iovcnt, 0, SIZE_MAX, prog, kMaxIov - 1, &total);
  if (total == 0) return PlainSend(fd, iov, iovcnt, flags, msg);
  const uint64_t offset = state->bytes_sent.load(std::memory_order_relaxed);
  for (;;) {
    const bool fresh = tx.pending_len == 0 && tx.frame_remaining == 0;
    const bool new_request = fresh && BeginFrame(state, total);
    iovec v[kMaxIov];
    int vc = 0;
    const size_t header_left = tx.pending_len;
    if (header_left > 0) v[vc++] = {tx.pending + kHeaderBytes - header_left, header_left};
    size_t asked = 0;
    vc += Slice(prog, progcnt, 0, tx.frame_remaining, v + vc, kMaxIov - vc, &asked);
    const ssize_t k = PlainSend(fd, v, vc, flags, msg);
    if (k < 0) {
      if (fresh) {  // nothing of the new header went out: as if never begun
        tx.pending_len = 0;
        tx.frame_remaining = 0;
        if (new_request) tx.span_id = 0;
      }
      return -1;
    }
    const size_t header_sent = static_cast<size_t>(k) < header_left ? k : header_left;
    tx.pending_len = static_cast<uint8_t>(tx.pending_len - header_sent);
    const size_t payload = static_cast<size_t>(k) - header_sent;
    tx.frame_remaining -= static_cast<uint32_t>(payload);
    if (new_request && k > 0) {
      Report(state, fd, InbandEvent::kSent, offset, tx.trace_id, tx.span_id);
    }
    if (payload > 0) return static_cast<ssize_t>(payload);
    if (NonBlocking(fd, flags)) {
      errno = EAGAIN;
      return -1;
    }
  }
}

ssize_t InbandSendfile(ConnectionState* state, int out_fd, int in_fd, off64_t* offset,
                       size_t count) {
  inband::SendState& tx = state->inband.send;
  if (tx.mode == Mode::kUndecided) DecideSend(state);
  if (tx.mode == Mode::kPlain || count == 0) {
    return RealSendfile64(out_fd, in_fd, offset, count);
  }
  const uint64_t stream_offset = state->bytes_sent.load(std::memory_order_relaxed);
  for (;;) {
    const bool fresh = tx.pending_len == 0 && tx.frame_remaining == 0;
    const bool new_request = fresh && BeginFrame(state, count);
    if (tx.pending_len > 0) {
      // The header first, held back (MSG_MORE) to leave with the file's first bytes.
      const ssize_t k = RealSend(out_fd, tx.pending + kHeaderBytes - tx.pending_len,
                                 tx.pending_len, MSG_MORE | MSG_NOSIGNAL);
      if (k < 0) {
        if (fresh) {
          tx.pending_len = 0;
          tx.frame_remaining = 0;
          if (new_request) tx.span_id = 0;
        }
        if (errno == EPIPE) {
          // Let the real call raise SIGPIPE and fail as the program would see it.
          return RealSendfile64(out_fd, in_fd, offset, count);
        }
        return -1;
      }
      tx.pending_len = static_cast<uint8_t>(tx.pending_len - k);
      if (new_request) Report(state, out_fd, InbandEvent::kSent, stream_offset, tx.trace_id, tx.span_id);
      if (tx.pending_len > 0) {
        if (NonBlocking(out_fd, 0)) {
          errno = EAGAIN;
          return -1;
        }
        continue;
      }
    }
    const size_t limit = count < tx.frame_remaining ? count : tx.frame_remaining;
    const ssize_t k = RealSendfile64(out_fd, in_fd, offset, limit);
    if (k > 0) tx.frame_remaining -= static_cast<uint32_t>(k);
    return k;
  }
}

}  // namespace reptrace::hook
