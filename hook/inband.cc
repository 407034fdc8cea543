#include "hook/inband.h"

#include <cstring>

#include "common/event_record.h"

namespace reptrace::hook::inband {
namespace {

constexpr size_t kCheckedBytes = kHeaderBytes - 4;

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the header's fields are stored as this machine stores them: little-endian");

// Little-endian fields at any alignment (memcpy: one load or store each).
template <typename T>
void Put(uint8_t* p, T v) {
  std::memcpy(p, &v, sizeof(v));
}
template <typename T>
T Get(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

uint32_t Check(const uint8_t* header) {
  return static_cast<uint32_t>(Fingerprint64(header, kCheckedBytes));
}

}  // namespace

void EncodeHeader(const Header& header, uint8_t (&out)[kHeaderBytes]) {
  std::memcpy(out, kMagic, 4);
  out[4] = kVersion;
  out[5] = kHeaderBytes;
  Put<uint16_t>(out + 6, header.flags);
  Put<uint32_t>(out + 8, header.payload_len);
  Put<uint64_t>(out + 12, header.trace_id);
  Put<uint64_t>(out + 20, header.span_id);
  Put<uint32_t>(out + 28, Check(out));
}

bool DecodeHeader(const uint8_t* in, Header* header) {
  if (std::memcmp(in, kMagic, 4) != 0 || in[4] != kVersion || in[5] != kHeaderBytes ||
      Get<uint32_t>(in + 28) != Check(in)) {
    return false;
  }
  header->flags = Get<uint16_t>(in + 6);
  header->payload_len = Get<uint32_t>(in + 8);
  header->trace_id = Get<uint64_t>(in + 12);
  header->span_id = Get<uint64_t>(in + 20);
  return true;
}

bool MagicPrefix(const uint8_t* in, size_t n) {
  return std::memcmp(in, kMagic, n < 4 ? n : 4) == 0;
}

Detected DetectFrames(const uint8_t* first, size_t n) {
  if (n == 0) return Detected::kNeedMore;
  if (!MagicPrefix(first, n)) return Detected::kPlain;
  if (n < kHeaderBytes) return Detected::kNeedMore;
  Header header;
  return DecodeHeader(first, &header) ? Detected::kFramed : Detected::kPlain;
}

void State::Reset(Mode send_mode, Mode receive_mode) {
  std::memset(&send, 0, sizeof(send));
  std::memset(&receive, 0, sizeof(receive));
  send.mode = send_mode;
  receive.mode = receive_mode;
  Refresh();
}

void State::Refresh() {
  const bool needed =
      send.mode != Mode::kPlain || receive.mode != Mode::kPlain || receive.have != 0;
  active.store(needed ? 1 : 0, std::memory_order_relaxed);
}

void IovBytes::Locate(size_t pos, int* index, size_t* offset) const {
  int i = 0;
  while (i < iovcnt_ && pos >= iov_[i].iov_len) pos -= iov_[i++].iov_len;
  *index = i;
  *offset = pos;
}

void IovBytes::Copy(size_t pos, size_t len, uint8_t* outside, bool out) const {
  int i;
  size_t off;
  Locate(pos, &i, &off);
  for (; len > 0 && i < iovcnt_; ++i, off = 0) {
    size_t take = iov_[i].iov_len - off;
    if (take > len) take = len;
    uint8_t* inside = static_cast<uint8_t*>(iov_[i].iov_base) + off;
    if (out) {
      std::memcpy(outside, inside, take);
    } else {
      std::memcpy(inside, outside, take);
    }
    outside += take;
    len -= take;
  }
}

void IovBytes::MoveDown(size_t to, size_t from, size_t len) const {
  if (to == from || len == 0) return;
  int ti, fi;
  size_t toff, foff;
  Locate(to, &ti, &toff);
  Locate(from, &fi, &foff);
  // Runs that lie within one iovec on both sides; moving down, front to back, never
  // overwrites a byte before it is read (memmove handles a run that overlaps itself).
  while (len > 0 && ti < iovcnt_ && fi < iovcnt_) {
    size_t run = len;
    if (run > iov_[ti].iov_len - toff) run = iov_[ti].iov_len - toff;
    if (run > iov_[fi].iov_len - foff) run = iov_[fi].iov_len - foff;
    std::memmove(static_cast<uint8_t*>(iov_[ti].iov_base) + toff,
                 static_cast<const uint8_t*>(iov_[fi].iov_base) + foff, run);
    len -= run;
    toff += run;
    foff += run;
    if (toff == iov_[ti].iov_len) ++ti, toff = 0;
    if (foff == iov_[fi].iov_len) ++fi, foff = 0;
  }
}

bool TakeHeader(ReceiveState* rx, Header* header, bool* new_request) {
  if (!DecodeHeader(rx->header, header)) return false;
  *new_request = header->span_id != rx->span_id;
  rx->have = 0;
  rx->frame_remaining = header->payload_len;
  rx->trace_id = header->trace_id;
  rx->span_id = header->span_id;
  return true;
}

size_t StripFrames(ReceiveState* rx, const IovBytes& bytes, size_t n, FrameSeen seen,
                   void* context, bool* bad) {
  *bad = false;
  size_t in = 0, out = 0;
  while (in < n) {
    if (rx->frame_remaining > 0) {
      size_t take = n - in;
      if (take > rx->frame_remaining) take = rx->frame_remaining;
      bytes.MoveDown(out, in, take);
      in += take;
      out += take;
      rx->frame_remaining -= static_cast<uint32_t>(take);
      continue;
    }
    size_t take = kHeaderBytes - rx->have;
    if (take > n - in) take = n - in;
    bytes.CopyOut(in, take, rx->header + rx->have);
    rx->have = static_cast<uint8_t>(rx->have + take);
    in += take;
    if (rx->have < kHeaderBytes) break;  // cut by the end: the rest comes next time
    Header header;
    bool new_request = false;
    if (!TakeHeader(rx, &header, &new_request)) {
      *bad = true;
      break;
    }
    if (new_request && seen != nullptr) seen(context, out, header);
  }
  return out;
}

bool PortSet::Parse(const char* text) {
  std::memset(bits_, 0, sizeof(bits_));
  empty_ = true;
  if (text == nullptr) return true;
  const char* p = text;
  auto number = [&p](uint32_t* value) {
    if (*p < '0' || *p > '9') return false;
    uint32_t v = 0;
    while (*p >= '0' && *p <= '9') {
      v = v * 10 + static_cast<uint32_t>(*p++ - '0');
      if (v > 65535) return false;
    }
    *value = v;
    return v >= 1;
  };
  uint64_t bits[1024] = {};
  bool any = false;
  while (*p != '\0') {
    uint32_t first = 0, last = 0;
    if (!number(&first)) return false;
    last = first;
    if (*p == '-') {
      ++p;
      if (!number(&last) || last < first) return false;
    }
    for (uint32_t port = first; port <= last; ++port) bits[port >> 6] |= uint64_t{1} << (port & 63);
    any = true;
    if (*p == ',') {
      ++p;
      if (*p == '\0') return false;
    } else if (*p != '\0') {
      return false;
    }
  }
  std::memcpy(bits_, bits, sizeof(bits_));
  empty_ = !any;
  return true;
}

uint64_t UnhookedPeers::Key(const uint8_t (&addr)[16], uint16_t port) {
  uint8_t key[18];
  std::memcpy(key, addr, 16);
  key[16] = static_cast<uint8_t>(port);
  key[17] = static_cast<uint8_t>(port >> 8);
  const uint64_t k = Fingerprint64(key, sizeof(key));
  return k == 0 ? 1 : k;
}

void UnhookedPeers::Add(uint64_t key) {
  if (Contains(key)) return;
  const uint32_t slot = next_.fetch_add(1, std::memory_order_relaxed) % kSlots;
  slots_[slot].store(key, std::memory_order_relaxed);
}

bool UnhookedPeers::Contains(uint64_t key) const {
  for (const auto& slot : slots_) {
    if (slot.load(std::memory_order_relaxed) == key) return true;
  }
  return false;
}

}  // namespace reptrace::hook::inband
