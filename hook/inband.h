// In-band mode: the frames a hooked client wraps around its bytes on a TCP connection to an
// opted-in destination port, and the state each end of a connection keeps about them.
//
// REPTrace's way, made safe. On a framed connection every byte the program sends goes in a
// frame: a kHeaderBytes header (magic, version, header length, flags, payload length,
// trace id, span id, a check over the header) and then `payload_len` bytes of the
// program's. A frame is as long as one send call asked to send (capped; see SendState), so
// the receiver always knows where the next header starts, whatever the segmentation on
// either side. The receiving hook strips the headers before the program sees any byte.
//
// Who frames:
//  - a client connection to a port in REPTRACE_INBAND_PORTS frames its sends unless the
//    server spoke first (a server-first protocol: its greeting came unframed) or this
//    process already found that destination unhooked (below);
//  - a server connection frames its sends only if the client's first bytes were a frame:
//    its responses then carry the ids of the request they answer.
// Who strips: every traced TCP server connection looks at the first bytes it receives: a
// valid header means a hooked client frames (the port the client dialled may differ from
// the one the server sees, behind a Service's address translation, so the receiving end
// needs no configuration). A client that framed looks at the server's first bytes: no
// header means the server is not hooked (it received our header), or greeted before our
// first frame reached it. The client remembers the destination (its later connections go
// unframed) and reports it (InbandEvent::kPeerNotHooked); the connection itself stays
// framed, since a hooked server that greeted strips our frames all the same.
//
// The header's first byte, 0xF5, never starts UTF-8 text, TLS, HTTP/2, RESP or the
// PostgreSQL protocol; a stream that starts with the whole 4-byte magic and a header whose
// 32-bit check holds by chance is the only one a server would take for framed.
//
// Everything here is pure (no system call): hook/inband_calls.h drives it on sockets.
#ifndef REPTRACE_HOOK_INBAND_H_
#define REPTRACE_HOOK_INBAND_H_

#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace reptrace::hook::inband {

inline constexpr size_t kHeaderBytes = 32;
inline constexpr uint8_t kMagic[4] = {0xF5, 'R', 'P', 'I'};
inline constexpr uint8_t kVersion = 1;
// Header::flags: the frame carries a server's bytes (a response).
inline constexpr uint16_t kFlagResponse = 1;

// The fields of a frame header (its wire form: EncodeHeader).
struct Header {
  uint16_t flags = 0;
  uint32_t payload_len = 0;  // program bytes that follow the header
  uint64_t trace_id = 0;
  // On a request: the client span the bytes belong to (the server span's parent). On a
  // response: the same id, echoed.
  uint64_t span_id = 0;
};

// Wire form, little-endian: magic[4], version u8, header length u8 (kHeaderBytes), flags
// u16, payload_len u32, trace_id u64, span_id u64, check u32 (the low 32 bits of
// Fingerprint64 of the 28 bytes before it).
void EncodeHeader(const Header& header, uint8_t (&out)[kHeaderBytes]);
// False unless `in` (kHeaderBytes bytes) holds the magic, version, header length and check
// of a header.
bool DecodeHeader(const uint8_t* in, Header* header);
// Whether the first min(n, 4) bytes at `in` are the magic's (the stream may be framed).
bool MagicPrefix(const uint8_t* in, size_t n);

enum class Detected { kPlain, kFramed, kNeedMore };
// Is a stream whose first `n` bytes are `first` framed? kNeedMore: they agree with a
// header so far but are too few to tell.
Detected DetectFrames(const uint8_t* first, size_t n);

enum class Mode : uint8_t {
  kPlain = 0,      // bytes pass as they are
  kUndecided = 1,  // decided at the direction's first byte (see the file comment)
  kFramed = 2,
};

struct SendState {
  Mode mode;
  uint8_t pending_len;  // the last pending_len bytes of `pending` are still to be written
  uint8_t reserved[2];
  // Payload bytes the last header announced that have not been written yet: the program's
  // next bytes, whatever they are (it may send other bytes after a short write).
  uint32_t frame_remaining;
  uint64_t trace_id;  // the ids of the request being sent (a client's)
  uint64_t span_id;
  uint8_t pending[kHeaderBytes];
};

struct ReceiveState {
  Mode mode;
  // kFramed: bytes of the next header received so far, in `header`. kUndecided: the first
  // bytes of the stream, held until they tell (always a header prefix). kPlain: bytes that
  // were held and turned out to be the program's, delivered before anything is read.
  uint8_t have;
  uint8_t reserved[2];
  uint32_t frame_remaining;  // payload bytes of the current frame still to come
  uint64_t trace_id;         // the ids of the last header received
  uint64_t span_id;
  uint8_t header[kHeaderBytes];
};

// One connection's in-band state (part of its ConnectionState, shared by its fds).
struct State {
  // Non-zero while a call on the connection must take the in-band path (Refresh()); the
  // only field the hot path of an untraced-in-band connection reads.
  std::atomic<uint8_t> active;
  SendState send;
  ReceiveState receive;

  // Starts the state of a new connection with these modes.
  void Reset(Mode send_mode, Mode receive_mode);
  // Recomputes `active` after a mode or the held bytes changed.
  void Refresh();
};

// A byte range made of iovecs, read and moved as one buffer: the program's buffers of a
// receive, where headers are stripped in place.
class IovBytes {
 public:
  IovBytes(const iovec* iov, int iovcnt) : iov_(iov), iovcnt_(iovcnt) {}
  // Copies `len` bytes from position `pos` out to `out`.
  void CopyOut(size_t pos, size_t len, uint8_t* out) const { Copy(pos, len, out, true); }
  // Copies `len` bytes from `in` to position `pos`.
  void CopyIn(size_t pos, size_t len, const uint8_t* in) const {
    Copy(pos, len, const_cast<uint8_t*>(in), false);
  }
  // Moves `len` bytes from position `from` down to position `to` (to <= from).
  void MoveDown(size_t to, size_t from, size_t len) const;

 private:
  // The iovec holding position `pos`, and the position's offset in it.
  void Locate(size_t pos, int* index, size_t* offset) const;
  // Copies between positions [pos, pos + len) and `outside`: out of the iovecs if `out`,
  // else into them (`outside` is then only read).
  void Copy(size_t pos, size_t len, uint8_t* outside, bool out) const;
  const iovec* iov_;
  int iovcnt_;
};

// What StripFrames tells of each header it took whose span id differs from the previous
// one (a new request): `payload_at` is where its payload starts among the bytes returned.
using FrameSeen = void (*)(void* context, size_t payload_at, const Header& header);

// The first `n` bytes of `bytes` were just received on a framed stream in state `rx`
// (kFramed): removes every header among them, in place, and returns how many payload bytes
// are left, at the start of `bytes`. A header cut by the end is kept in `rx` for the next
// receive. Sets `*bad` (and stops) at a header that fails DecodeHeader: the stream is not
// framed as it should be.
size_t StripFrames(ReceiveState* rx, const IovBytes& bytes, size_t n, FrameSeen seen,
                   void* context, bool* bad);

// Takes a complete header from rx->header: the frame's length and ids go into `rx`; false
// if it fails its check. `*new_request` says whether its span id differs from the last.
bool TakeHeader(ReceiveState* rx, Header* header, bool* new_request);

// The destination ports whose connections a client frames (REPTRACE_INBAND_PORTS): a
// bit per port.
class PortSet {
 public:
  // "6379,8000-8100": ports and inclusive ranges, comma-separated, 1..65535. False (and
  // the set left empty) if any part is not one.
  bool Parse(const char* text);
  bool Contains(uint16_t port) const { return (bits_[port >> 6] >> (port & 63)) & 1; }
  bool empty() const { return empty_; }

 private:
  uint64_t bits_[1024] = {};
  bool empty_ = true;
};

// Destinations a client found unhooked (kPeerNotHooked), so that its later connections to
// them go unframed: a small table of address-and-port keys, oldest replaced first. Lock-
// free; a lost race forgets a destination (its next connection frames, and is caught
// again).
class UnhookedPeers {
 public:
  static constexpr int kSlots = 64;
  void Add(uint64_t key);
  bool Contains(uint64_t key) const;
  // The key of an address (16 bytes, IPv4 mapped) and port.
  static uint64_t Key(const uint8_t (&addr)[16], uint16_t port);

 private:
  std::atomic<uint64_t> slots_[kSlots] = {};
  std::atomic<uint32_t> next_{0};
};

}  // namespace reptrace::hook::inband

#endif  // REPTRACE_HOOK_INBAND_H_
