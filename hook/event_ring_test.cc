#include "hook/event_ring.h"

#include <gtest/gtest.h>

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <cstdint>
#include <thread>
#include <vector>

namespace reptrace::hook {
namespace {

EventRecord Numbered(uint32_t producer, uint64_t sequence) {
  EventRecord r = {};
  r.header = {kRecordMagic, static_cast<uint16_t>(RecordType::kEvent), sizeof(EventRecord)};
  r.pid = producer;
  r.offset = sequence;
  r.hash = Fingerprint64(&sequence, sizeof(sequence)) ^ producer;  // a checksum of the record
  return r;
}

// Pops the oldest record as the agent does, with its reader (common/shared_ring.h) on the
// ring's memory, made anew each time from where the last one stopped (the header's
// dequeue_pos). Returns the bytes copied, 0 if there is nothing (or no ring).
size_t Pop(const EventRing& ring, void* out) {
  RingHeader* header = ring.header();
  if (header == nullptr) return 0;
  RingReader reader(header, ring.capacity());
  return reader.Pop(out);
}

bool Pop(const EventRing& ring, EventRecord* out) {
  alignas(8) unsigned char bytes[kMaxRecordSize];
  if (Pop(ring, bytes) == 0) return false;
  std::memcpy(out, bytes, sizeof(*out));
  return true;
}

TEST(EventRingTest, PopsInPushOrder) {
  EventRing ring(8);
  ASSERT_TRUE(ring.Init());
  for (uint64_t i = 0; i < 5; ++i) ASSERT_TRUE(ring.TryPush(Numbered(1, i)));
  EventRecord out;
  for (uint64_t i = 0; i < 5; ++i) {
    ASSERT_TRUE(Pop(ring, &out));
    EXPECT_EQ(out.offset, i);
  }
  EXPECT_FALSE(Pop(ring, &out));
  ring.Release();
}

// A cell holds records of any size up to an EventRecord; a pop copies only header.size
// bytes of it (a DataRecord without its capture: 48), and counts pushes.
TEST(EventRingTest, PopsOnlyTheRecordsOwnSize) {
  EventRing ring(8);
  ASSERT_TRUE(ring.Init());
  EventRecord big = Numbered(1, 7);
  ASSERT_TRUE(ring.TryPush(big));  // leaves a stale 248-byte record in cell 0
  unsigned char out[EventRing::kCellBytes];
  ASSERT_EQ(Pop(ring, out), sizeof(EventRecord));
  for (uint64_t i = 1; i < 8; ++i) ASSERT_TRUE(ring.TryPush(Numbered(1, i)));

  DataRecord data = {};
  data.header = {kRecordMagic, static_cast<uint16_t>(RecordType::kData),
                 static_cast<uint16_t>(kDataRecordBaseSize)};
  data.offset = 99;
  EventRing::Claim claim;
  void* cell = ring.TryClaim(&claim);  // cell 0 again: the stale record is still there
  ASSERT_NE(cell, nullptr);
  std::memcpy(cell, &data, kDataRecordBaseSize);
  ring.Commit(claim);
  EXPECT_EQ(ring.pushed(), 9u);

  for (uint64_t i = 1; i < 8; ++i) ASSERT_EQ(Pop(ring, out), sizeof(EventRecord));
  std::memset(out, 0xee, sizeof(out));
  ASSERT_EQ(Pop(ring, out), kDataRecordBaseSize);
  DataRecord popped;
  std::memcpy(&popped, out, kDataRecordBaseSize);
  EXPECT_EQ(popped.offset, 99u);
  EXPECT_EQ(out[kDataRecordBaseSize], 0xee) << "copied past the record's size";
  EXPECT_EQ(Pop(ring, out), 0u);
  ring.Reset();
  EXPECT_EQ(ring.pushed(), 0u);
  ring.Release();
}

TEST(EventRingTest, PushFailsBeforeInit) {
  EventRing ring(8);
  EXPECT_FALSE(ring.TryPush(Numbered(1, 0)));
  EventRecord out;
  EXPECT_FALSE(Pop(ring, &out));
}

TEST(EventRingTest, FullRingRefusesAndRecoversAfterPop) {
  EventRing ring(8);
  ASSERT_TRUE(ring.Init());
  for (uint64_t i = 0; i < 8; ++i) ASSERT_TRUE(ring.TryPush(Numbered(1, i)));
  EXPECT_FALSE(ring.TryPush(Numbered(1, 8)));
  EventRecord out;
  ASSERT_TRUE(Pop(ring, &out));
  EXPECT_EQ(out.offset, 0u);
  EXPECT_TRUE(ring.TryPush(Numbered(1, 8)));
  ring.Release();
}

TEST(EventRingTest, ResetForgetsQueuedRecords) {
  EventRing ring(8);
  ASSERT_TRUE(ring.Init());
  for (uint64_t i = 0; i < 8; ++i) ASSERT_TRUE(ring.TryPush(Numbered(1, i)));
  ring.Reset();
  EventRecord out;
  EXPECT_FALSE(Pop(ring, &out));
  for (uint64_t i = 0; i < 8; ++i) EXPECT_TRUE(ring.TryPush(Numbered(2, i)));
  ring.Release();
}

// Several producers push concurrently while one consumer pops: every record that a push
// accepted comes out exactly once, intact, in per-producer order; every refused push is a
// drop the producer counted, and accepted + dropped = attempted.
TEST(EventRingTest, ConcurrentProducersOneConsumerNothingLostOrDuplicated) {
  constexpr int kProducers = 4;
  constexpr uint64_t kPerProducer = 50000;
  EventRing ring(1024);  // small, so that the consumer falls behind and pushes overflow
  ASSERT_TRUE(ring.Init());

  std::atomic<uint64_t> accepted{0};
  std::atomic<uint64_t> dropped{0};
  std::atomic<int> producers_done{0};
  std::vector<std::vector<uint8_t>> seen(kProducers, std::vector<uint8_t>(kPerProducer, 0));
  std::vector<int64_t> last(kProducers, -1);
  bool in_order = true;
  bool intact = true;
  uint64_t popped = 0;

  auto check = [&](const EventRecord& r) {
    ++popped;
    const uint64_t seq = r.offset;
    if (r.pid >= kProducers || seq >= kPerProducer ||
        r.hash != (Fingerprint64(&seq, sizeof(seq)) ^ r.pid)) {
      intact = false;
      return;
    }
    ++seen[r.pid][seq];
    if (static_cast<int64_t>(seq) <= last[r.pid]) in_order = false;
    last[r.pid] = static_cast<int64_t>(seq);
  };
  std::thread consumer([&] {
    EventRecord r;
    // Pops only once the ring has overflowed (or every producer is done): on a loaded
    // machine the producers may run one at a time, and a consumer popping from the start
    // could keep up, leaving the full-ring path untested. Concurrent pushes and pops
    // follow, for as long as the producers still run.
    while (dropped.load() == 0 && producers_done.load() < kProducers) {
      std::this_thread::yield();
    }
    for (;;) {
      const bool done = producers_done.load() == kProducers;  // read before popping
      if (Pop(ring, &r)) {
        check(r);
      } else if (done) {
        break;  // every push finished before this empty pop
      } else {
        std::this_thread::yield();
      }
    }
  });
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (uint64_t i = 0; i < kPerProducer; ++i) {
        if (ring.TryPush(Numbered(p, i))) {
          accepted.fetch_add(1);
        } else {
          dropped.fetch_add(1);
        }
      }
      producers_done.fetch_add(1);
    });
  }
  for (auto& t : producers) t.join();
  consumer.join();

  EXPECT_TRUE(intact);
  EXPECT_TRUE(in_order);
  EXPECT_EQ(accepted.load() + dropped.load(), kProducers * kPerProducer);
  EXPECT_EQ(popped, accepted.load());
  EXPECT_GT(dropped.load(), 0u) << "the ring never overflowed; the test is too gentle";
  uint64_t duplicates = 0;
  uint64_t distinct = 0;
  for (const auto& per : seen) {
    for (uint8_t count : per) {
      if (count > 1) ++duplicates;
      if (count > 0) ++distinct;
    }
  }
  EXPECT_EQ(duplicates, 0u);
  EXPECT_EQ(distinct, accepted.load());
  ring.Release();
}

// What the hook pushes into a memfd is what the agent's reader, on its own mapping of the
// same memfd, pops: in order, each record's own bytes, and the header's counts.
TEST(EventRingTest, TheAgentsReaderOnAnotherMappingPopsWhatWasPushed) {
  EventRing ring(8);
  const int fd = memfd_create("ring-test", MFD_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, static_cast<off_t>(ring.bytes())), 0);
  void* mine = mmap(nullptr, ring.bytes(), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  void* theirs = mmap(nullptr, ring.bytes(), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ASSERT_NE(mine, MAP_FAILED);
  ASSERT_NE(theirs, MAP_FAILED);
  EXPECT_EQ(ring.Attach(mine, 42), nullptr);
  uint32_t capacity = 0;
  ASSERT_TRUE(RingLayoutValid(theirs, ring.bytes(), &capacity));
  EXPECT_EQ(capacity, 8u);
  EXPECT_FALSE(RingLayoutValid(theirs, ring.bytes() - 1, &capacity));  // size must match
  RingReader reader(static_cast<RingHeader*>(theirs), capacity);

  for (uint64_t i = 0; i < 8; ++i) ASSERT_TRUE(ring.TryPush(Numbered(1, i)));
  EXPECT_FALSE(ring.TryPush(Numbered(1, 8)));  // full until the reader frees cells
  EXPECT_EQ(ring.CountDrop(), 0u);  // none counted before it
  alignas(8) unsigned char out[kMaxRecordSize];
  for (uint64_t i = 0; i < 5; ++i) {
    ASSERT_EQ(reader.Pop(out), sizeof(EventRecord));
    EventRecord r;
    std::memcpy(&r, out, sizeof(r));
    EXPECT_EQ(r.offset, i);
  }
  for (uint64_t i = 8; i < 13; ++i) ASSERT_TRUE(ring.TryPush(Numbered(1, i)));  // wrapped
  for (uint64_t i = 5; i < 13; ++i) {
    ASSERT_EQ(reader.Pop(out), sizeof(EventRecord));
    EventRecord r;
    std::memcpy(&r, out, sizeof(r));
    EXPECT_EQ(r.offset, i);
  }
  EXPECT_EQ(reader.Pop(out), 0u);
  EXPECT_EQ(reader.pushed(), 13u);
  EXPECT_EQ(reader.dropped(), 1u);
  EXPECT_EQ(ring.Detach(), mine);
  munmap(mine, ring.bytes());
  munmap(theirs, ring.bytes());
  close(fd);
}

// A handover (the hook lost an agent connection) stops a reader of an earlier epoch at the
// handover's position; the next connection's reader starts where the last one stopped and
// reads on.
TEST(EventRingTest, AReaderStopsAtAHandoverToTheNextAgentConnection) {
  EventRing ring(8);
  ASSERT_TRUE(ring.Init());
  RingHeader* header = ring.header();
  RingReader old_reader(header, 8);  // epoch 0
  for (uint64_t i = 0; i < 3; ++i) ASSERT_TRUE(ring.TryPush(Numbered(1, i)));
  header->handover.store((uint64_t{1} << kHandoverEpochShift) | 2);
  for (uint64_t i = 3; i < 5; ++i) ASSERT_TRUE(ring.TryPush(Numbered(1, i)));
  alignas(8) unsigned char out[kMaxRecordSize];
  EXPECT_NE(old_reader.Pop(out), 0u);
  EXPECT_NE(old_reader.Pop(out), 0u);
  EXPECT_EQ(old_reader.Pop(out), 0u);  // position 2 on is the next connection's
  header->link_epoch = 1;
  RingReader next_reader(header, 8);
  for (uint64_t i = 2; i < 5; ++i) {
    ASSERT_NE(next_reader.Pop(out), 0u);
    EventRecord r;
    std::memcpy(&r, out, sizeof(r));
    EXPECT_EQ(r.offset, i);
  }
  EXPECT_EQ(next_reader.Pop(out), 0u);
  ring.Release();
}

}  // namespace
}  // namespace reptrace::hook
