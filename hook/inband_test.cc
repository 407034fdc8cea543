#include "hook/inband.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/event_record.h"

namespace reptrace::hook::inband {
namespace {

std::string Encoded(const Header& header) {
  uint8_t out[kHeaderBytes];
  EncodeHeader(header, out);
  return std::string(reinterpret_cast<const char*>(out), kHeaderBytes);
}

Header Make(uint32_t payload, uint64_t trace_id, uint64_t span_id, uint16_t flags = 0) {
  Header h;
  h.flags = flags;
  h.payload_len = payload;
  h.trace_id = trace_id;
  h.span_id = span_id;
  return h;
}

TEST(InbandHeaderTest, TheWireFormatIsLittleEndianFieldsAfterTheMagic) {
  const std::string bytes = Encoded(Make(0x01020304, 0x1112131415161718, 0x2122232425262728, 1));
  const std::string expected_prefix(
      "\xF5RPI\x01\x20\x01\x00\x04\x03\x02\x01"
      "\x18\x17\x16\x15\x14\x13\x12\x11"
      "\x28\x27\x26\x25\x24\x23\x22\x21",
      28);
  EXPECT_EQ(bytes.substr(0, 28), expected_prefix);
  const uint64_t check = Fingerprint64(bytes.data(), 28);
  EXPECT_EQ(static_cast<uint8_t>(bytes[28]), static_cast<uint8_t>(check));
  EXPECT_EQ(static_cast<uint8_t>(bytes[31]), static_cast<uint8_t>(check >> 24));
}

TEST(InbandHeaderTest, DecodeGivesBackWhatWasEncoded) {
  const Header in = Make(4096, 77, 99, kFlagResponse);
  const std::string bytes = Encoded(in);
  Header out;
  ASSERT_TRUE(DecodeHeader(reinterpret_cast<const uint8_t*>(bytes.data()), &out));
  EXPECT_EQ(out.flags, in.flags);
  EXPECT_EQ(out.payload_len, in.payload_len);
  EXPECT_EQ(out.trace_id, in.trace_id);
  EXPECT_EQ(out.span_id, in.span_id);
}

TEST(InbandHeaderTest, AnyChangedBitMakesTheHeaderInvalid) {
  const std::string good = Encoded(Make(10, 1, 2));
  for (size_t byte = 0; byte < kHeaderBytes; ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string bad = good;
      bad[byte] = static_cast<char>(bad[byte] ^ (1 << bit));
      Header h;
      EXPECT_FALSE(DecodeHeader(reinterpret_cast<const uint8_t*>(bad.data()), &h))
          << "byte " << byte << " bit " << bit;
    }
  }
}

TEST(InbandDetectTest, TheFirstBytesTellAFramedStreamFromAPlainOne) {
  const std::string framed = Encoded(Make(3, 1, 2)) + "abc";
  auto detect = [](const std::string& s, size_t n) {
    return DetectFrames(reinterpret_cast<const uint8_t*>(s.data()), n);
  };
  EXPECT_EQ(detect(framed, framed.size()), Detected::kFramed);
  EXPECT_EQ(detect(framed, kHeaderBytes), Detected::kFramed);
  for (size_t n = 0; n < kHeaderBytes; ++n) {
    EXPECT_EQ(detect(framed, n), Detected::kNeedMore) << n;
  }
  EXPECT_EQ(detect("GET / HTTP/1.1\r\n", 16), Detected::kPlain);
  EXPECT_EQ(detect("\xF5", 1), Detected::kNeedMore);
  EXPECT_EQ(detect("\xF5R", 2), Detected::kNeedMore);
  EXPECT_EQ(detect("\xF5RX", 3), Detected::kPlain);
  // The magic followed by anything that is not a valid header is plain.
  std::string fake = framed;
  fake[20] ^= 1;
  EXPECT_EQ(detect(fake, fake.size()), Detected::kPlain);
}

// Cuts `stream` into reads of the sizes in `cuts` (cycled), each read landing in buffers
// made of iovecs of `iov_sizes`, and strips them as a receive would.
struct StripResult {
  std::string payload;
  std::vector<std::pair<size_t, uint64_t>> frames;  // (payload offset, span id)
  bool bad = false;
};

StripResult StripInReads(const std::string& stream, const std::vector<size_t>& cuts,
                         const std::vector<size_t>& iov_sizes) {
  ReceiveState rx = {};
  rx.mode = Mode::kFramed;
  StripResult result;
  struct Context {
    StripResult* result;
    size_t base;
  } context{&result, 0};
  size_t pos = 0;
  for (size_t i = 0; pos < stream.size(); ++i) {
    size_t n = cuts[i % cuts.size()];
    if (n > stream.size() - pos) n = stream.size() - pos;
    std::vector<std::string> buffers;
    std::vector<iovec> iov;
    size_t room = 0;
    for (size_t k = 0; room < n; ++k) {
      buffers.emplace_back(iov_sizes[k % iov_sizes.size()], '\0');
      room += buffers.back().size();
    }
    for (auto& b : buffers) iov.push_back({b.data(), b.size()});
    const IovBytes bytes(iov.data(), static_cast<int>(iov.size()));
    bytes.CopyIn(0, n, reinterpret_cast<const uint8_t*>(stream.data() + pos));
    context.base = result.payload.size();
    bool bad = false;
    const size_t got = StripFrames(
        &rx, bytes, n,
        [](void* c, size_t at, const Header& h) {
          auto* ctx = static_cast<Context*>(c);
          ctx->result->frames.emplace_back(ctx->base + at, h.span_id);
        },
        &context, &bad);
    if (bad) {
      result.bad = true;
      return result;
    }
    std::string out(got, '\0');
    bytes.CopyOut(0, got, reinterpret_cast<uint8_t*>(out.data()));
    result.payload += out;
    pos += n;
  }
  return result;
}

TEST(InbandStripTest, FramesCutAtEveryPlaceInAnyBuffersGiveExactlyThePayload) {
  // Three requests (span ids 5, 5, 6: the first two frames are one request) and a frame
  // with no payload.
  const std::string stream = Encoded(Make(5, 9, 5)) + "hello" + Encoded(Make(1, 9, 5)) + "!" +
                             Encoded(Make(0, 9, 6)) + Encoded(Make(40, 9, 6)) +
                             std::string(40, 'z');
  const std::string payload = "hello!" + std::string(40, 'z');
  for (size_t cut = 1; cut <= stream.size(); ++cut) {
    for (const auto& iov_sizes : std::vector<std::vector<size_t>>{{4096}, {1}, {3, 5}, {7}}) {
      const StripResult r = StripInReads(stream, {cut, cut + 3}, iov_sizes);
      ASSERT_FALSE(r.bad);
      EXPECT_EQ(r.payload, payload) << "reads of " << cut;
      ASSERT_EQ(r.frames.size(), 2u) << "reads of " << cut;
      EXPECT_EQ(r.frames[0], std::make_pair(size_t{0}, uint64_t{5}));
      EXPECT_EQ(r.frames[1], std::make_pair(size_t{6}, uint64_t{6}));
    }
  }
}

TEST(InbandStripTest, RandomStreamsInRandomReadsAndBuffersGiveExactlyThePayload) {
  std::mt19937_64 random(20261202);  // fixed: a failure is reproducible
  for (int round = 0; round < 2000; ++round) {
    std::string stream, payload;
    std::vector<std::pair<size_t, uint64_t>> expected;  // new requests: (offset, span id)
    uint64_t span = 0;
    const int frames = 1 + static_cast<int>(random() % 6);
    for (int f = 0; f < frames; ++f) {
      const size_t n = random() % 4 == 0 ? 0 : random() % 300;
      if (random() % 2 == 0 || span == 0) {
        span = random() | 1;
        expected.emplace_back(payload.size(), span);
      }
      std::string bytes(n, '\0');
      for (char& c : bytes) c = static_cast<char>(random());
      stream += Encoded(Make(static_cast<uint32_t>(n), 7, span)) + bytes;
      payload += bytes;
    }
    std::vector<size_t> cuts, iov_sizes;
    for (int i = 0; i < 5; ++i) cuts.push_back(1 + random() % 80);
    for (int i = 0; i < 3; ++i) iov_sizes.push_back(1 + random() % 40);
    const StripResult r = StripInReads(stream, cuts, iov_sizes);
    ASSERT_FALSE(r.bad) << "round " << round;
    ASSERT_EQ(r.payload, payload) << "round " << round;
    ASSERT_EQ(r.frames, expected) << "round " << round;
  }
}

TEST(InbandStripTest, AHeaderThatFailsItsCheckStopsTheStrip) {
  std::string stream = Encoded(Make(2, 1, 1)) + "ok" + Encoded(Make(2, 1, 1)) + "no";
  stream[kHeaderBytes + 2 + 9] ^= 0x40;
  const StripResult r = StripInReads(stream, {1000}, {4096});
  EXPECT_TRUE(r.bad);
}

TEST(InbandIovBytesTest, MoveDownAcrossBuffersKeepsTheBytesInOrder) {
  std::string a = "0123", b = "45", c = "6789ab";
  iovec iov[3] = {{a.data(), a.size()}, {b.data(), b.size()}, {c.data(), c.size()}};
  IovBytes bytes(iov, 3);
  bytes.MoveDown(1, 3, 8);  // "3456789a" to position 1
  EXPECT_EQ(a + b + c, "03456789a9ab");
}

TEST(InbandPortSetTest, PortsAndRangesAreParsedAndAnythingElseRefused) {
  PortSet ports;
  ASSERT_TRUE(ports.Parse("80,6379,8000-8002"));
  EXPECT_TRUE(ports.Contains(80));
  EXPECT_TRUE(ports.Contains(6379));
  EXPECT_TRUE(ports.Contains(8001));
  EXPECT_TRUE(ports.Contains(8002));
  EXPECT_FALSE(ports.Contains(8003));
  EXPECT_FALSE(ports.Contains(81));
  EXPECT_FALSE(ports.empty());
  for (const char* bad : {"0", "65536", "80,", ",80", "80-79", "8o", "80 81", "-5", "1-"}) {
    EXPECT_FALSE(ports.Parse(bad)) << bad;
    EXPECT_TRUE(ports.empty()) << bad;
    EXPECT_FALSE(ports.Contains(80)) << bad;
  }
  EXPECT_TRUE(ports.Parse(""));
  EXPECT_TRUE(ports.empty());
  EXPECT_TRUE(ports.Parse("1-65535"));
  EXPECT_TRUE(ports.Contains(65535));
}

TEST(InbandUnhookedPeersTest, RemembersTheLatestDestinations) {
  UnhookedPeers peers;
  uint8_t addr[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1};
  const uint64_t first = UnhookedPeers::Key(addr, 1);
  EXPECT_NE(first, UnhookedPeers::Key(addr, 2));
  peers.Add(first);
  EXPECT_TRUE(peers.Contains(first));
  for (uint16_t port = 2; port < 2 + UnhookedPeers::kSlots; ++port) {
    peers.Add(UnhookedPeers::Key(addr, port));
  }
  EXPECT_FALSE(peers.Contains(first));  // the oldest made room
  EXPECT_TRUE(peers.Contains(UnhookedPeers::Key(addr, 2 + UnhookedPeers::kSlots - 1)));
}

}  // namespace
}  // namespace reptrace::hook::inband
