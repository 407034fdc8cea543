// TraceSampler against a real PostgreSQL: which traces it keeps and why, that kept traces
// stay whole and dropped ones go entirely, that two samplers (two replicas) on one
// database decide each trace once, and that a trace still growing waits.
#include "controller/trace_sampler.h"

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <pqxx/pqxx>

#include "absl/time/clock.h"
#include "controller/testing/spans.h"
#include "gtest/gtest.h"
#include "tests/testing/test_database.h"

namespace reptrace::controller {
namespace {

using testing::Batch;
using testing::ClientSpan;
using testing::Flow;
using testing::Ipv4;
using testing::ServerSpan;

constexpr int64_t kT0 = 1'763'000'000'000'000'000;  // Nov 2025, in ns
constexpr int64_t kMs = 1'000'000;
// Long enough that no test runs into it by accident: "after the wait" is passed as now.
constexpr absl::Duration kWait = absl::Minutes(1);

int64_t AfterTheWait() {
  return absl::GetCurrentTimeNanos() + absl::ToInt64Nanoseconds(kWait) + kMs;
}

int64_t Count(const reptrace::testing::TestDatabase& db, const std::string& sql) {
  pqxx::connection conn(db.conninfo());
  pqxx::nontransaction tx(conn);
  return tx.exec1(sql)[0].as<int64_t>();
}

v1::TraceConfig Sampling(double probability, bool keep_errors = false,
                         int64_t keep_slower_than_ms = 0) {
  v1::TraceConfig config;
  config.mutable_sampling()->set_probability(probability);
  config.mutable_sampling()->set_keep_errors(keep_errors);
  config.mutable_sampling()->set_keep_slower_than_ms(keep_slower_than_ms);
  return config;
}

// Request `i`: curl -> nginx -> (nginx as client) -> python, four spans on three nodes;
// its trace id is the curl span's id, RootOf(i). `duration_ns` is curl's.
uint64_t RootOf(int i) { return 0x1000'0000ULL + static_cast<uint64_t>(i) * 16; }
std::vector<v1::Span> Request(int i, int64_t duration_ns = 10 * kMs) {
  const uint64_t id = RootOf(i);
  const auto port = static_cast<uint32_t>(20000 + i);
  const Flow front{Ipv4(10, 0, 0, 1, port), Ipv4(10, 0, 0, 2, 80)};
  const Flow back{Ipv4(10, 0, 0, 2, port), Ipv4(10, 0, 0, 3, 8000)};
  const int64_t start = kT0 + i * 100 * kMs;
  return {ClientSpan({.span_id = id, .service = "curl", .flow = front, .start_ns = start,
                      .duration_ns = duration_ns}),
          ServerSpan({.span_id = id + 1, .service = "nginx", .flow = front,
                      .start_ns = start + kMs, .duration_ns = 6 * kMs}),
          ClientSpan({.span_id = id + 2, .local_parent_span_id = id + 1, .service = "nginx",
                      .flow = back, .start_ns = start + 2 * kMs, .duration_ns = 4 * kMs}),
          ServerSpan({.span_id = id + 3, .service = "python", .flow = back,
                      .start_ns = start + 3 * kMs, .duration_ns = 2 * kMs})};
}

class TraceSamplerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = Store::Open(db_.conninfo());
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    auto writer = store_->NewWriter();
    ASSERT_TRUE(writer.ok()) << writer.status();
    writer_ = std::move(*writer);
    auto sampler = TraceSampler::Create(*store_, kWait);
    ASSERT_TRUE(sampler.ok()) << sampler.status();
    sampler_ = std::move(*sampler);
  }

  // Stores requests [first, last) as their agents would: the back end's two spans first
  // (from the python node and nginx's node), then the front end's (a late root).
  void StoreRequests(int first, int last) {
    v1::SpanBatch back, front;
    for (int i = first; i < last; ++i) {
      std::vector<v1::Span> spans = Request(i);
      *back.add_spans() = spans[3];
      *back.add_spans() = spans[2];
      *front.add_spans() = spans[0];
      *front.add_spans() = spans[1];
    }
    Write(back);
    Write(front);
  }

  void Write(v1::SpanBatch batch) {
    batch.set_batch_id(++batch_id_);
    auto written = writer_->WriteBatch("agent-a", batch);
    ASSERT_TRUE(written.ok()) << written.status();
  }

  SamplingTally Decide(int64_t now_ns) {
    auto tally = sampler_->DecideQuietTraces(now_ns);
    EXPECT_TRUE(tally.ok()) << tally.status();
    return tally.ok() ? *tally : SamplingTally{};
  }

  // For each request i < `requests`: how many of its four spans are stored, with trace id
  // RootOf(i) (one query: a connection per request would take most of the test's time).
  std::vector<int64_t> SpansPerRequest(int requests) {
    std::vector<int64_t> counts(requests, 0);
    pqxx::connection conn(db_.conninfo());
    pqxx::nontransaction tx(conn);
    for (const auto& row : tx.exec("SELECT span_id, trace_id FROM spans")) {
      const auto span = static_cast<uint64_t>(row[0].as<int64_t>());
      const auto trace = static_cast<uint64_t>(row[1].as<int64_t>());
      if (span < RootOf(0)) continue;
      const uint64_t i = (span - RootOf(0)) / 16;
      if (i < counts.size() && trace == RootOf(static_cast<int>(i)) && span - trace < 4) {
        ++counts[i];
      }
    }
    return counts;
  }
  int64_t SpansOf(int i) { return SpansPerRequest(i + 1)[i]; }

  reptrace::testing::TestDatabase db_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<SpanWriter> writer_;
  std::unique_ptr<TraceSampler> sampler_;
  uint64_t batch_id_ = 0;
};

TEST_F(TraceSamplerTest, ProbabilityZeroDropsEveryTraceWholeAndCountsIt) {
  sampler_->SetConfig(Sampling(0));
  StoreRequests(0, 20);
  // And five traces of one span (no summary row).
  v1::SpanBatch singles;
  for (int i = 100; i < 105; ++i) *singles.add_spans() = Request(i)[0];
  Write(singles);
  ASSERT_EQ(Count(db_, "SELECT count(*) FROM traces"), 20);

  const SamplingTally tally = Decide(AfterTheWait());

  EXPECT_EQ(tally.dropped_probability.traces, 25);
  EXPECT_EQ(tally.dropped_probability.spans, 85);
  EXPECT_EQ(tally.kept_probability.traces, 0);
  EXPECT_EQ(Count(db_, "SELECT count(*) FROM spans"), 0);
  EXPECT_EQ(Count(db_, "SELECT count(*) FROM traces"), 0);
  EXPECT_EQ(Count(db_, "SELECT count(*) FROM sampling_pending"), 0);
  auto stats = store_->GetStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->sampling().dropped_probability().traces(), 25u);
  EXPECT_EQ(stats->sampling().dropped_probability().spans(), 85u);
  auto listed = store_->ListTraces("", 1000);
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_TRUE(listed->empty());
}

TEST_F(TraceSamplerTest, ProbabilityOneKeepsEverythingWithoutAnyBookkeeping) {
  sampler_->SetConfig(v1::TraceConfig());  // sampling left out: probability 1
  EXPECT_FALSE(store_->sampling_on());
  StoreRequests(0, 20);

  EXPECT_EQ(Count(db_, "SELECT count(*) FROM sampling_pending"), 0);
  const SamplingTally tally = Decide(AfterTheWait());
  EXPECT_EQ(tally.kept_probability.traces + tally.dropped_probability.traces, 0);
  EXPECT_EQ(Count(db_, "SELECT count(*) FROM spans"), 80);
  EXPECT_EQ(Count(db_, "SELECT sum(traces) FROM sampling_counts"), 0);

  // Explicitly 1, with keep rules: every trace is kept anyway, still no bookkeeping.
  sampler_->SetConfig(Sampling(1, true, 5));
  EXPECT_FALSE(store_->sampling_on());
  StoreRequests(20, 30);
  EXPECT_EQ(Count(db_, "SELECT count(*) FROM sampling_pending"), 0);
}

TEST_F(TraceSamplerTest, HalfKeepsAboutHalfAndEachTraceWholeOrGoneEntirely) {
  sampler_->SetConfig(Sampling(0.5));
  constexpr int kTraces = 400;
  for (int first = 0; first < kTraces; first += 50) StoreRequests(first, first + 50);

  const SamplingTally tally = Decide(AfterTheWait());

  EXPECT_EQ(tally.kept_probability.traces + tally.dropped_probability.traces, kTraces);
  // Binomial(400, 0.5): 200 +- 10; 4.5 standard deviations either way.
  EXPECT_GE(tally.kept_probability.traces, 155);
  EXPECT_LE(tally.kept_probability.traces, 245);
  int kept = 0;
  const std::vector<int64_t> stored = SpansPerRequest(kTraces);
  for (int i = 0; i < kTraces; ++i) {
    const int64_t spans = stored[i];
    EXPECT_TRUE(spans == 4 || spans == 0) << "request " << i << ": " << spans << " spans";
    // The same decision any replica makes.
    EXPECT_EQ(spans == 4, TraceSampler::KeptByProbability(RootOf(i), 0.5)) << i;
    if (spans == 4) ++kept;
  }
  EXPECT_EQ(kept, tally.kept_probability.traces);
  EXPECT_EQ(tally.kept_probability.spans, 4 * kept);
  EXPECT_EQ(Count(db_, "SELECT count(*) FROM spans"), 4 * kept);
  EXPECT_EQ(Count(db_, "SELECT count(*) FROM traces"), kept);
  auto stats = store_->GetStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->sampling().kept_probability().traces(), static_cast<uint64_t>(kept));
  EXPECT_EQ(stats->sampling().dropped_probability().spans(),
            static_cast<uint64_t>(4 * (kTraces - kept)));
  EXPECT_EQ(stats->sampling().traces_pending(), 0u);
}

TEST_F(TraceSamplerTest, KeepRulesKeepErrorsAndSlowTracesWithTheirReason) {
  sampler_->SetConfig(Sampling(0, /*keep_errors=*/true, /*keep_slower_than_ms=*/100));
  v1::SpanBatch batch;
  auto add = [&](std::vector<v1::Span> spans) {
    for (v1::Span& span : spans) *batch.add_spans() = std::move(span);
  };
  std::vector<v1::Span> failed = Request(0);
  failed[3].set_status(v1::SPAN_STATUS_ERROR);  // python failed
  add(failed);
  add(Request(1, /*duration_ns=*/150 * kMs));    // slow
  add(Request(2, /*duration_ns=*/100 * kMs));    // exactly the threshold: slow
  std::vector<v1::Span> both = Request(3, 300 * kMs);
  both[0].set_status(v1::SPAN_STATUS_ERROR);
  add(both);                                     // slow and failed: the error rule first
  add(Request(4, /*duration_ns=*/99 * kMs));     // neither
  Write(batch);

  const SamplingTally tally = Decide(AfterTheWait());

  EXPECT_EQ(tally.kept_error.traces, 2);
  EXPECT_EQ(tally.kept_error.spans, 8);
  EXPECT_EQ(tally.kept_slow.traces, 2);
  EXPECT_EQ(tally.dropped_probability.traces, 1);
  EXPECT_EQ(SpansOf(0), 4);
  EXPECT_EQ(SpansOf(1), 4);
  EXPECT_EQ(SpansOf(2), 4);
  EXPECT_EQ(SpansOf(3), 4);
  EXPECT_EQ(SpansOf(4), 0);
  auto stats = store_->GetStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->sampling().kept_error().traces(), 2u);
  EXPECT_EQ(stats->sampling().kept_slow().traces(), 2u);
  EXPECT_EQ(stats->sampling().kept_slow().spans(), 8u);
  EXPECT_EQ(stats->sampling().dropped_probability().traces(), 1u);
}

TEST_F(TraceSamplerTest, ErrorsAreNotKeptWithoutKeepErrors) {
  sampler_->SetConfig(Sampling(0, /*keep_errors=*/false));
  std::vector<v1::Span> failed = Request(0);
  failed[1].set_status(v1::SPAN_STATUS_ERROR);
  v1::SpanBatch batch;
  for (const v1::Span& span : failed) *batch.add_spans() = span;
  Write(batch);

  const SamplingTally tally = Decide(AfterTheWait());

  EXPECT_EQ(tally.dropped_probability.traces, 1);
  EXPECT_EQ(SpansOf(0), 0);
}

TEST_F(TraceSamplerTest, ATraceStillReceivingSpansIsNotDecidedBeforeItsWait) {
  sampler_->SetConfig(Sampling(0));
  const std::vector<v1::Span> spans = Request(0);
  v1::SpanBatch back;
  *back.add_spans() = spans[3];
  *back.add_spans() = spans[2];
  const int64_t before_first = absl::GetCurrentTimeNanos();
  Write(back);
  const int64_t after_first = absl::GetCurrentTimeNanos();
  // Quiet for less than the wait: nothing decided.
  EXPECT_EQ(Decide(before_first + absl::ToInt64Nanoseconds(kWait) - kMs)
                .dropped_probability.traces,
            0);
  absl::SleepFor(absl::Milliseconds(5));
  v1::SpanBatch front;
  *front.add_spans() = spans[0];
  *front.add_spans() = spans[1];
  Write(front);  // links the back end under a new root: its wait starts again

  // The first batch's wait is over, the trace's is not.
  const SamplingTally early = Decide(after_first + absl::ToInt64Nanoseconds(kWait) + kMs);
  EXPECT_EQ(early.dropped_probability.traces, 0);
  EXPECT_EQ(SpansOf(0), 4);

  // Then it is decided once, whole; the id it had before the root came names no trace.
  const SamplingTally tally = Decide(AfterTheWait());
  EXPECT_EQ(tally.dropped_probability.traces, 1);
  EXPECT_EQ(tally.dropped_probability.spans, 4);
  EXPECT_EQ(early.vanished + tally.vanished, 1);
  EXPECT_EQ(Count(db_, "SELECT count(*) FROM spans"), 0);
  EXPECT_EQ(Count(db_, "SELECT count(*) FROM sampling_pending"), 0);
}

TEST_F(TraceSamplerTest, ALateSpanOfADroppedTraceStandsAloneAndIsDecidedOnItsOwn) {
  sampler_->SetConfig(Sampling(0));
  const std::vector<v1::Span> spans = Request(0);
  v1::SpanBatch first;
  for (int k = 0; k < 3; ++k) *first.add_spans() = spans[k];
  Write(first);
  ASSERT_EQ(Decide(AfterTheWait()).dropped_probability.spans, 3);

  v1::SpanBatch late;
  *late.add_spans() = spans[3];  // python's span, after its trace was dropped
  Write(late);
  EXPECT_EQ(Count(db_, "SELECT count(*) FROM spans WHERE trace_id = span_id"), 1);
  const SamplingTally again = Decide(AfterTheWait());

  EXPECT_EQ(again.dropped_probability.traces, 1);
  EXPECT_EQ(again.dropped_probability.spans, 1);
  EXPECT_EQ(Count(db_, "SELECT count(*) FROM spans"), 0);
}

TEST_F(TraceSamplerTest, ALateSpanJoiningAKeptTraceKeepsItAndIsCountedAsASecondDecision) {
  sampler_->SetConfig(Sampling(0, /*keep_errors=*/true));
  std::vector<v1::Span> spans = Request(0);
  spans[0].set_status(v1::SPAN_STATUS_ERROR);
  v1::SpanBatch first;
  for (int k = 0; k < 3; ++k) *first.add_spans() = spans[k];
  Write(first);
  ASSERT_EQ(Decide(AfterTheWait()).kept_error.traces, 1);

  v1::SpanBatch late;
  *late.add_spans() = spans[3];  // python's span joins the kept trace
  Write(late);
  const SamplingTally again = Decide(AfterTheWait());

  // The same trace id and still a failed span: kept again, whole; the counts are of
  // decisions, so it counts twice.
  EXPECT_EQ(again.kept_error.traces, 1);
  EXPECT_EQ(again.kept_error.spans, 4);
  EXPECT_EQ(SpansOf(0), 4);
  EXPECT_EQ(Count(db_, "SELECT traces FROM sampling_counts WHERE decision = 1"), 2);
}

TEST_F(TraceSamplerTest, TwoReplicasDecideEveryTraceExactlyOnce) {
  // A second replica: its own store, writer and sampler on the same database.
  auto other_store = Store::Open(db_.conninfo());
  ASSERT_TRUE(other_store.ok()) << other_store.status();
  auto other_writer = (*other_store)->NewWriter();
  ASSERT_TRUE(other_writer.ok()) << other_writer.status();
  auto other = TraceSampler::Create(**other_store, kWait);
  ASSERT_TRUE(other.ok()) << other.status();
  sampler_->SetConfig(Sampling(0.5));
  (*other)->SetConfig(Sampling(0.5));
  // Each request's back end reaches one replica, its front end the other.
  constexpr int kTraces = 1600;  // several decision transactions each
  uint64_t other_batch = 0;
  for (int first = 0; first < kTraces; first += 100) {
    v1::SpanBatch back, front;
    for (int i = first; i < first + 100; ++i) {
      std::vector<v1::Span> spans = Request(i);
      *back.add_spans() = spans[3];
      *back.add_spans() = spans[2];
      *front.add_spans() = spans[0];
      *front.add_spans() = spans[1];
    }
    Write(back);
    front.set_batch_id(++other_batch);
    auto written = (*other_writer)->WriteBatch("agent-b", front);
    ASSERT_TRUE(written.ok()) << written.status();
  }

  const int64_t now = AfterTheWait();
  SamplingTally mine, theirs;
  std::thread a([&] { mine = Decide(now); });
  std::thread b([&] {
    auto tally = (*other)->DecideQuietTraces(now);
    EXPECT_TRUE(tally.ok()) << tally.status();
    if (tally.ok()) theirs = *tally;
  });
  a.join();
  b.join();

  const int64_t kept = mine.kept_probability.traces + theirs.kept_probability.traces;
  const int64_t dropped = mine.dropped_probability.traces + theirs.dropped_probability.traces;
  EXPECT_EQ(kept + dropped, kTraces);
  EXPECT_EQ(Count(db_, "SELECT count(*) FROM spans"), 4 * kept);
  EXPECT_EQ(Count(db_, "SELECT traces FROM sampling_counts WHERE decision = 3"), kept);
  EXPECT_EQ(Count(db_, "SELECT traces FROM sampling_counts WHERE decision = 4"), dropped);
  EXPECT_EQ(Count(db_, "SELECT spans FROM sampling_counts WHERE decision = 4"), 4 * dropped);
  EXPECT_EQ(Count(db_, "SELECT count(*) FROM sampling_pending"), 0);
  const std::vector<int64_t> stored = SpansPerRequest(kTraces);
  for (int i = 0; i < kTraces; ++i) {
    const int64_t spans = stored[i];
    ASSERT_TRUE(spans == 4 || spans == 0) << "request " << i << ": " << spans << " spans";
  }
}

TEST(KeptByProbabilityTest, IsTheSameForAnIdAndKeepsTheGivenFraction) {
  int kept = 0;
  constexpr int kIds = 100'000;
  for (uint64_t id = 1; id <= kIds; ++id) {
    const bool keep = TraceSampler::KeptByProbability(id, 0.25);
    EXPECT_EQ(keep, TraceSampler::KeptByProbability(id, 0.25));
    // A trace kept at some probability is kept at any higher one.
    if (keep) {
      EXPECT_TRUE(TraceSampler::KeptByProbability(id, 0.5));
    }
    kept += keep;
  }
  EXPECT_NEAR(kept, kIds / 4, 700);  // sd 137
  EXPECT_FALSE(TraceSampler::KeptByProbability(42, 0));
  EXPECT_TRUE(TraceSampler::KeptByProbability(42, 1));
}

}  // namespace
}  // namespace reptrace::controller
