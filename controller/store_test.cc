#include "controller/store.h"

#include <algorithm>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <google/protobuf/util/message_differencer.h>
#include <pqxx/pqxx>

#include "controller/schema.h"
#include "controller/testing/spans.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/test_database.h"

namespace reptrace::controller {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using testing::Batch;
using testing::ClientSpan;
using testing::Flow;
using testing::Ipv4;
using testing::ServerSpan;
using testing::SpanSpec;

constexpr int64_t kT0 = 1'763'000'000'000'000'000;  // Nov 2025, in ns
constexpr int64_t kMs = 1'000'000;
constexpr int64_t kSecond = 1'000'000'000;

std::unique_ptr<Store> OpenStore(const reptrace::testing::TestDatabase& db) {
  auto store = Store::Open(db.conninfo());
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? std::move(*store) : nullptr;
}

std::unique_ptr<SpanWriter> NewWriter(Store& store) {
  auto writer = store.NewWriter();
  EXPECT_TRUE(writer.ok()) << writer.status();
  return writer.ok() ? std::move(*writer) : nullptr;
}

// span id -> resolved parent id, of the whole trace holding `id`.
std::map<uint64_t, uint64_t> ParentsOf(Store& store, uint64_t id, uint64_t* trace_id) {
  std::map<uint64_t, uint64_t> parents;
  auto trace = store.GetTrace(id);
  EXPECT_TRUE(trace.ok()) << trace.status();
  if (!trace.ok()) return parents;
  *trace_id = trace->trace_id();
  for (const v1::Span& span : trace->spans()) {
    EXPECT_EQ(span.trace_id(), trace->trace_id());
    parents[span.span_id()] = span.parent_span_id();
  }
  return parents;
}

int64_t CountRows(const reptrace::testing::TestDatabase& db, const std::string& sql) {
  pqxx::connection conn(db.conninfo());
  pqxx::nontransaction tx(conn);
  return tx.exec1(sql)[0].as<int64_t>();
}

// ---------------------------------------------------------------------------------------
// Migrations and batches

TEST(StoreTest, MigrationsAreAppliedOnceAndReopeningIsANoOp) {
  reptrace::testing::TestDatabase db;
  ASSERT_TRUE(db.ok());
  ASSERT_NE(OpenStore(db), nullptr);
  ASSERT_NE(OpenStore(db), nullptr);  // a restart

  EXPECT_EQ(CountRows(db, "SELECT count(*) FROM schema_migrations"),
            static_cast<int64_t>(Migrations().size()));
  pqxx::connection conn(db.conninfo());
  auto applied = ApplyMigrations(conn);
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_THAT(*applied, IsEmpty());
}

TEST(StoreTest, ReplicasStartingTogetherApplyEachMigrationOnce) {
  reptrace::testing::TestDatabase db;
  ASSERT_TRUE(db.ok());
  std::vector<absl::Status> results(4);
  std::vector<std::thread> replicas;
  for (size_t i = 0; i < results.size(); ++i) {
    replicas.emplace_back([&db, &results, i] { results[i] = Store::Open(db.conninfo()).status(); });
  }
  for (std::thread& replica : replicas) replica.join();

  for (const absl::Status& result : results) EXPECT_TRUE(result.ok()) << result;
  EXPECT_EQ(CountRows(db, "SELECT count(*) FROM schema_migrations"),
            static_cast<int64_t>(Migrations().size()));
}

// A database of schema version 1 with spans in it (their summaries too, as version 1
// kept them) upgrades, and what it held links with what comes after.
TEST(StoreTest, AVersion1DatabaseUpgradesAndItsSpansStillLink) {
  reptrace::testing::TestDatabase db;
  ASSERT_TRUE(db.ok());
  {
    pqxx::connection conn(db.conninfo());
    ASSERT_TRUE(ApplyMigrations(conn, 1).ok());
    pqxx::work tx(conn);
    // What the version-1 writer stored for a lone server span (10.0.0.2:80 accepted
    // 10.0.0.1:40312, IPv6 peer for the second) and its summary.
    tx.exec(R"sql(
INSERT INTO spans (span_id, trace_id, kind, service, node, pid, tid, process, name,
                   start_ns, end_ns, status, status_message, local_ip, local_port, peer_ip,
                   peer_port, request_offset, request_bytes, response_offset,
                   response_bytes, request_hash, response_hash, connection_id, agent_id,
                   batch_id)
VALUES (2, 2, 2, 'nginx', 'n', 1, 1, 'nginx', 'GET /', 1763000000001000000,
        1763000000002000000, 1, '', '\x0a000002', 80, '\x0a000001', 40312, 156, 78, 0,
        0, 0, 0, 1, 'old-agent', 1),
       (4, 4, 2, 'nginx', 'n', 1, 1, 'nginx', 'GET /', 1763000000001000000,
        1763000000002000000, 1, '', '\x20010db8000000000000000000000002', 443,
        '\x20010db8000000000000000000000001', 50000, 0, 78, 0, 0, 0, 0, 1,
        'old-agent', 1);
INSERT INTO traces (trace_id, start_ns, end_ns, duration_ns, span_count, root_service,
                    root_name, status, services)
VALUES (2, 1763000000001000000, 1763000000002000000, 1000000, 1, 'nginx', 'GET /', 1,
        '{nginx}'),
       (4, 1763000000001000000, 1763000000002000000, 1000000, 1, 'nginx', 'GET /', 1,
        '{nginx}');
)sql");
    tx.commit();
  }
  auto store = OpenStore(db);  // applies the rest
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(CountRows(db, "SELECT max(version) FROM schema_migrations"),
            Migrations().back().version);
  auto writer = NewWriter(*store);
  ASSERT_NE(writer, nullptr);
  const Flow v4{Ipv4(10, 0, 0, 1, 40312), Ipv4(10, 0, 0, 2, 80)};
  v1::Endpoint v6_client;
  v6_client.set_ip(std::string("\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01", 16));
  v6_client.set_port(50000);
  v1::Endpoint v6_server = v6_client;
  v6_server.set_ip(std::string("\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x02", 16));
  v6_server.set_port(443);
  ASSERT_TRUE(writer
                  ->WriteBatch("agent", Batch(1, {
      ClientSpan({.span_id = 1, .service = "curl", .flow = v4, .request_offset = 156,
                  .start_ns = kT0}),
      ClientSpan({.span_id = 3, .service = "curl", .flow = Flow{v6_client, v6_server},
                  .start_ns = kT0})}))
                  .ok());

  uint64_t trace_id = 0;
  EXPECT_EQ(ParentsOf(*store, 2, &trace_id), (std::map<uint64_t, uint64_t>{{1, 0}, {2, 1}}));
  EXPECT_EQ(ParentsOf(*store, 4, &trace_id), (std::map<uint64_t, uint64_t>{{3, 0}, {4, 3}}));
  auto traces = store->ListTraces("", 0);
  ASSERT_TRUE(traces.ok()) << traces.status();
  ASSERT_EQ(traces->size(), 2u);
  for (const auto& t : *traces) EXPECT_EQ(t.span_count(), 2) << t.trace_id();
  EXPECT_EQ(CountRows(db, "SELECT count(*) FROM traces WHERE trace_id IN (2, 4)"), 0);
}

TEST(StoreTest, ABatchStoredTwiceIsStoredOnceAndReportedDuplicate) {
  reptrace::testing::TestDatabase db;
  auto store = OpenStore(db);
  ASSERT_NE(store, nullptr);
  auto writer = NewWriter(*store);
  ASSERT_NE(writer, nullptr);
  const Flow flow{Ipv4(10, 0, 0, 1, 40000), Ipv4(10, 0, 0, 2, 80)};
  const v1::SpanBatch batch =
      Batch(1, {ClientSpan({.span_id = 11, .service = "curl", .flow = flow, .start_ns = kT0}),
                ServerSpan({.span_id = 12, .service = "nginx", .flow = flow,
                            .start_ns = kT0 + kMs})});

  auto first = writer->WriteBatch("agent-a", batch);
  auto second = writer->WriteBatch("agent-a", batch);
  auto other_agent = writer->WriteBatch("agent-b", Batch(1, {}));

  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_TRUE(other_agent.ok()) << other_agent.status();
  EXPECT_FALSE(first->duplicate);
  EXPECT_EQ(first->spans_inserted, 2);
  EXPECT_TRUE(second->duplicate);
  EXPECT_EQ(second->spans_inserted, 0);
  EXPECT_FALSE(other_agent->duplicate);  // batch ids are per agent
  EXPECT_EQ(CountRows(db, "SELECT count(*) FROM spans"), 2);
  EXPECT_EQ(CountRows(db, "SELECT count(*) FROM ingested_batches"), 2);
}

TEST(StoreTest, AgentsAreRecordedWithTheirCounters) {
  reptrace::testing::TestDatabase db;
  auto store = OpenStore(db);
  ASSERT_NE(store, nullptr);
  auto writer = NewWriter(*store);
  ASSERT_NE(writer, nullptr);
  v1::AgentHello hello;
  hello.set_agent_id("agent-a");
  hello.set_node("node-1");
  hello.set_agent_version("0.1.0");
  hello.set_hostname("host-1");
  const Flow flow{Ipv4(10, 0, 0, 1, 40000), Ipv4(10, 0, 0, 2, 80)};
  v1::SpanBatch batch =
      Batch(1, {ClientSpan({.span_id = 11, .service = "curl", .flow = flow, .start_ns = kT0})});
  batch.mutable_counters()->set_spans_built(5);
  v1::AgentCounters later;
  later.set_events_received(99);
  later.set_events_without_connection(7);
  later.set_inband_peers_not_hooked(3);

  ASSERT_TRUE(writer->AgentConnected(hello, kT0).ok());
  ASSERT_TRUE(writer->WriteBatch("agent-a", batch, /*spans_rejected=*/2).ok());
  ASSERT_TRUE(writer->AgentCounters("agent-a", later, kT0 + kSecond).ok());
  ASSERT_TRUE(writer->AgentDisconnected("agent-a", kT0, kT0 + 2 * kSecond).ok());

  auto agents = store->ListAgents();
  ASSERT_TRUE(agents.ok()) << agents.status();
  ASSERT_EQ(agents->size(), 1u);
  const v1::AgentInfo& agent = agents->front();
  EXPECT_EQ(agent.agent_id(), "agent-a");
  EXPECT_EQ(agent.node(), "node-1");
  EXPECT_EQ(agent.hostname(), "host-1");
  EXPECT_FALSE(agent.connected());
  EXPECT_EQ(agent.connected_at_ns(), kT0);
  EXPECT_EQ(agent.last_seen_ns(), kT0 + 2 * kSecond);
  EXPECT_EQ(agent.batches_stored(), 1u);
  EXPECT_EQ(agent.spans_stored(), 1u);
  EXPECT_EQ(agent.counters().events_received(), 99u);
  EXPECT_EQ(agent.counters().events_without_connection(), 7u);
  EXPECT_EQ(agent.counters().inband_peers_not_hooked(), 3u);
  EXPECT_EQ(CountRows(db, "SELECT spans_rejected FROM agents"), 2);
}

TEST(StoreTest, StatsGiveEachAgentsTrafficAndDropsByReason) {
  reptrace::testing::TestDatabase db;
  auto store = OpenStore(db);
  ASSERT_NE(store, nullptr);
  auto writer = NewWriter(*store);
  ASSERT_NE(writer, nullptr);
  v1::AgentHello hello;
  hello.set_agent_id("agent-b");
  hello.set_node("node-2");
  ASSERT_TRUE(writer->AgentConnected(hello, kT0).ok());
  hello.set_agent_id("agent-a");
  hello.set_node("node-1");
  ASSERT_TRUE(writer->AgentConnected(hello, kT0).ok());
  const Flow flow{Ipv4(10, 0, 0, 1, 40000), Ipv4(10, 0, 0, 2, 80)};
  v1::SpanBatch batch =
      Batch(1, {ClientSpan({.span_id = 11, .service = "curl", .flow = flow, .start_ns = kT0}),
                ServerSpan({.span_id = 12, .service = "nginx", .flow = flow, .start_ns = kT0})});
  v1::AgentCounters* c = batch.mutable_counters();
  c->set_events_received(1000);
  c->set_spans_built(9);
  c->set_hook_events_dropped(1);
  c->set_hook_events_rate_limited(2);
  c->set_records_malformed(3);
  c->set_events_without_connection(4);
  c->set_spans_dropped(5);
  ASSERT_TRUE(writer->WriteBatch("agent-a", batch, /*spans_rejected=*/6).ok());

  auto stats = store->GetStats();

  ASSERT_TRUE(stats.ok()) << stats.status();
  ASSERT_EQ(stats->agents_size(), 2);
  const v1::AgentStats& a = stats->agents(0);  // by node
  EXPECT_EQ(a.agent_id(), "agent-a");
  EXPECT_EQ(a.node(), "node-1");
  EXPECT_TRUE(a.connected());
  EXPECT_EQ(a.events_received(), 1000u);
  EXPECT_EQ(a.spans_built(), 9u);
  EXPECT_EQ(a.spans_stored(), 2u);
  EXPECT_EQ(a.hook_events_dropped(), 1u);
  EXPECT_EQ(a.hook_events_rate_limited(), 2u);
  EXPECT_EQ(a.records_malformed(), 3u);
  EXPECT_EQ(a.events_without_connection(), 4u);
  EXPECT_EQ(a.spans_dropped(), 5u);
  EXPECT_EQ(a.spans_rejected(), 6u);
  EXPECT_EQ(stats->agents(1).agent_id(), "agent-b");
  EXPECT_EQ(stats->agents(1).spans_stored(), 0u);
  // Sampling is off by default: nothing decided, nothing pending.
  EXPECT_EQ(stats->sampling().kept_probability().traces(), 0u);
  EXPECT_EQ(stats->sampling().dropped_probability().traces(), 0u);
  EXPECT_EQ(stats->sampling().traces_pending(), 0u);
  // ListAgents shows the rate-limited count too.
  auto agents = store->ListAgents();
  ASSERT_TRUE(agents.ok()) << agents.status();
  EXPECT_EQ(agents->front().counters().hook_events_rate_limited(), 2u);
}

// ---------------------------------------------------------------------------------------
// Linking

// curl -> nginx -> (nginx as client) -> python, on three nodes, as the agents see it. Ids
// have the top bit set, as half of all random ids do.
constexpr uint64_t kCurlClient = 0xc1c1'0000'0000'0001;
constexpr uint64_t kNginxServer = 0x5151'0000'0000'0002;
constexpr uint64_t kNginxClient = 0xc2c2'0000'0000'0003;
constexpr uint64_t kPythonServer = 0x5252'0000'0000'0004;

std::vector<std::pair<std::string, v1::Span>> FourSpanRequest(int64_t t0) {
  const Flow to_nginx{Ipv4(10, 0, 0, 1, 40312), Ipv4(10, 0, 0, 2, 80)};
  const Flow to_python{Ipv4(10, 0, 0, 2, 50122), Ipv4(10, 0, 0, 3, 8000)};
  // nginx reuses its upstream connection: this request is not the first on it.
  const uint64_t upstream_offset = 312;
  return {
      {"agent-curl", ClientSpan({.span_id = kCurlClient, .service = "curl", .pid = 4001,
                                 .flow = to_nginx, .request_offset = 0, .start_ns = t0,
                                 .duration_ns = 12 * kMs, .name = "GET /api/items"})},
      // The nginx node's clock is 3 ms behind.
      {"agent-nginx", ServerSpan({.span_id = kNginxServer, .service = "nginx", .pid = 5001,
                                  .flow = to_nginx, .request_offset = 0,
                                  .start_ns = t0 - 3 * kMs + 200'000,
                                  .duration_ns = 11 * kMs, .name = "GET /api/items"})},
      {"agent-nginx", ClientSpan({.span_id = kNginxClient,
                                  .local_parent_span_id = kNginxServer,
                                  .service = "nginx", .pid = 5001, .flow = to_python,
                                  .request_offset = upstream_offset,
                                  .start_ns = t0 - 3 * kMs + 400'000,
                                  .duration_ns = 10 * kMs, .name = "GET /items"})},
      {"agent-python", ServerSpan({.span_id = kPythonServer, .service = "python",
                                   .pid = 6001, .flow = to_python,
                                   .request_offset = upstream_offset,
                                   .start_ns = t0 + 5 * kMs, .duration_ns = 8 * kMs,
                                   .name = "GET /items"})},
  };
}

// Stores `spans` (agent, span) one per batch in every order they could arrive in, each
// order in a fresh database, each agent numbering its own batches; calls `check` after
// each order. Returns how many orders were tried.
// Stores spans[i] for each i of `order`, one per batch, in a fresh database, each agent
// numbering its own batches; then calls `check`. False if the store could not be opened.
template <typename Check>
bool InArrivalOrder(const std::vector<std::pair<std::string, v1::Span>>& spans,
                    const std::vector<size_t>& order, Check check) {
  ::testing::Message described;
  for (size_t i : order) described << i;
  SCOPED_TRACE(::testing::Message() << "arrival order " << described);
  reptrace::testing::TestDatabase db;
  auto store = OpenStore(db);
  EXPECT_NE(store, nullptr);
  auto writer = store ? NewWriter(*store) : nullptr;
  EXPECT_NE(writer, nullptr);
  if (writer == nullptr) return false;
  std::map<std::string, uint64_t> next_batch_id;
  for (size_t i : order) {
    const auto& [agent, span] = spans[i];
    auto written = writer->WriteBatch(agent, Batch(++next_batch_id[agent], {span}));
    EXPECT_TRUE(written.ok()) << written.status();
  }
  check(*store);
  return true;
}

template <typename Check>
int InEveryArrivalOrder(const std::vector<std::pair<std::string, v1::Span>>& spans,
                        Check check) {
  std::vector<size_t> order(spans.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  int tried = 0;
  do {
    if (!InArrivalOrder(spans, order, check)) return tried;
    ++tried;
  } while (std::next_permutation(order.begin(), order.end()));
  return tried;
}

TEST(SpanLinkingTest, FourSpanRequestIsOneTraceWhateverTheArrivalOrder) {
  const auto spans = FourSpanRequest(kT0);
  const int orders_tried = InEveryArrivalOrder(spans, [&](Store& store) {

    uint64_t trace_id = 0;
    const auto parents = ParentsOf(store, kPythonServer, &trace_id);
    EXPECT_EQ(trace_id, kCurlClient);
    EXPECT_EQ(parents, (std::map<uint64_t, uint64_t>{{kCurlClient, 0},
                                                     {kNginxServer, kCurlClient},
                                                     {kNginxClient, kNginxServer},
                                                     {kPythonServer, kNginxClient}}));
    auto traces = store.ListTraces("", 0);
    ASSERT_TRUE(traces.ok()) << traces.status();
    ASSERT_EQ(traces->size(), 1u);
    EXPECT_EQ(traces->front().trace_id(), kCurlClient);
    EXPECT_EQ(traces->front().span_count(), 4);
    EXPECT_EQ(traces->front().root_service(), "curl");
    EXPECT_EQ(traces->front().root_name(), "GET /api/items");
    EXPECT_THAT(traces->front().services(), ElementsAre("curl", "nginx", "python"));
  });
  EXPECT_EQ(orders_tried, 24);
}

// The same tree when spans arrive together: linked in memory before they are stored.
TEST(SpanLinkingTest, FourSpanRequestInOneOrTwoBatchesIsOneTraceWhateverTheOrder) {
  const auto spans = FourSpanRequest(kT0);
  std::vector<int> order = {0, 1, 2, 3};
  int orders_tried = 0;
  do {
    // split 4: all in one batch; 2: the first two of the order, then the other two.
    for (size_t split : {size_t{4}, size_t{2}}) {
      SCOPED_TRACE(::testing::Message() << "order " << order[0] << order[1] << order[2]
                                        << order[3] << ", first batch of " << split);
      reptrace::testing::TestDatabase db;
      auto store = OpenStore(db);
      ASSERT_NE(store, nullptr);
      auto writer = NewWriter(*store);
      ASSERT_NE(writer, nullptr);
      std::vector<v1::Span> first;
      std::vector<v1::Span> second;
      for (size_t i = 0; i < order.size(); ++i) {
        (i < split ? first : second).push_back(spans[static_cast<size_t>(order[i])].second);
      }
      ASSERT_TRUE(writer->WriteBatch("agent", Batch(1, first)).ok());
      if (!second.empty()) {
        ASSERT_TRUE(writer->WriteBatch("agent", Batch(2, second)).ok());
      }

      uint64_t trace_id = 0;
      EXPECT_EQ(ParentsOf(*store, kNginxClient, &trace_id),
                (std::map<uint64_t, uint64_t>{{kCurlClient, 0},
                                              {kNginxServer, kCurlClient},
                                              {kNginxClient, kNginxServer},
                                              {kPythonServer, kNginxClient}}));
      EXPECT_EQ(trace_id, kCurlClient);
      auto traces = store->ListTraces("", 0);
      ASSERT_TRUE(traces.ok()) << traces.status();
      ASSERT_EQ(traces->size(), 1u);
      EXPECT_EQ(traces->front().trace_id(), kCurlClient);
      EXPECT_EQ(traces->front().span_count(), 4);
      EXPECT_THAT(traces->front().services(), ElementsAre("curl", "nginx", "python"));
      EXPECT_EQ(CountRows(db, "SELECT count(*) FROM traces"), 1);
    }
    ++orders_tried;
  } while (std::next_permutation(order.begin(), order.end()));
  EXPECT_EQ(orders_tried, 24);
}

// A server and a client of one batch pair up in memory, but a stored client of the same
// 4-tuple is nearer in time: the stored one wins, as it would in any other order.
TEST(SpanLinkingTest, AStoredNearerClientWinsOverOneInTheSameBatch) {
  reptrace::testing::TestDatabase db;
  auto store = OpenStore(db);
  ASSERT_NE(store, nullptr);
  auto writer = NewWriter(*store);
  ASSERT_NE(writer, nullptr);
  const Flow flow{Ipv4(10, 0, 0, 1, 42000), Ipv4(10, 0, 0, 2, 6379)};
  ASSERT_TRUE(writer
                  ->WriteBatch("agent-app", Batch(1, {ClientSpan({.span_id = 1,
                                                                  .service = "app",
                                                                  .flow = flow,
                                                                  .start_ns = kT0})}))
                  .ok());
  ASSERT_TRUE(writer
                  ->WriteBatch("agent-mixed", Batch(1, {
      ClientSpan({.span_id = 3, .service = "app", .flow = flow, .start_ns = kT0 + 20 * kSecond}),
      ServerSpan({.span_id = 2, .service = "redis", .flow = flow, .start_ns = kT0 + kMs})}))
                  .ok());

  uint64_t trace_id = 0;
  EXPECT_EQ(ParentsOf(*store, 2, &trace_id), (std::map<uint64_t, uint64_t>{{1, 0}, {2, 1}}));
  EXPECT_EQ(trace_id, 1u);
  EXPECT_EQ(ParentsOf(*store, 3, &trace_id), (std::map<uint64_t, uint64_t>{{3, 0}}));
  auto traces = store->ListTraces("", 100);
  ASSERT_TRUE(traces.ok()) << traces.status();
  std::vector<std::pair<uint64_t, int>> listed;
  for (const auto& t : *traces) listed.emplace_back(t.trace_id(), t.span_count());
  EXPECT_THAT(listed, ElementsAre(std::make_pair(uint64_t{3}, 1), std::make_pair(uint64_t{1}, 2)));
}

// A span id stored before (a span resent in another batch) is not stored again; the
// batch's other spans are, and link as usual. A span id twice in one batch is stored once.
TEST(StoreTest, SpanIdsStoredBeforeOrRepeatedInABatchAreStoredOnce) {
  reptrace::testing::TestDatabase db;
  auto store = OpenStore(db);
  ASSERT_NE(store, nullptr);
  auto writer = NewWriter(*store);
  ASSERT_NE(writer, nullptr);
  const Flow flow{Ipv4(10, 0, 0, 1, 40000), Ipv4(10, 0, 0, 2, 80)};
  const Flow other{Ipv4(10, 0, 0, 1, 40001), Ipv4(10, 0, 0, 2, 80)};
  const v1::Span client = ClientSpan({.span_id = 11, .service = "curl", .flow = flow,
                                      .start_ns = kT0});
  const v1::Span server = ServerSpan({.span_id = 12, .service = "nginx", .flow = flow,
                                      .start_ns = kT0 + kMs});
  const v1::Span lone = ServerSpan({.span_id = 13, .service = "nginx", .flow = other,
                                    .start_ns = kT0 + 2 * kMs});

  auto first = writer->WriteBatch("agent", Batch(1, {client}));
  auto second = writer->WriteBatch("agent", Batch(2, {client, server, lone, lone}));

  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_FALSE(second->duplicate);
  EXPECT_EQ(second->spans_inserted, 2);
  EXPECT_EQ(CountRows(db, "SELECT count(*) FROM spans"), 3);
  uint64_t trace_id = 0;
  EXPECT_EQ(ParentsOf(*store, 12, &trace_id), (std::map<uint64_t, uint64_t>{{11, 0}, {12, 11}}));
  auto traces = store->ListTraces("", 0);
  ASSERT_TRUE(traces.ok()) << traces.status();
  ASSERT_EQ(traces->size(), 2u);
  EXPECT_EQ(traces->at(0).trace_id(), 13u);
  EXPECT_EQ(traces->at(1).trace_id(), 11u);
  EXPECT_EQ(traces->at(1).span_count(), 2);
  // The next batch takes the fast way again on the same connection.
  auto third = writer->WriteBatch("agent", Batch(3, {ServerSpan({.span_id = 14,
                                                                 .service = "nginx",
                                                                 .flow = other,
                                                                 .request_offset = 78,
                                                                 .start_ns = kT0})}));
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ(third->spans_inserted, 1);
}

// Text with COPY's and JSON's special characters comes back as it was sent (NULs, which
// PostgreSQL text cannot hold, dropped).
TEST(StoreQueryTest, TextWithSpecialCharactersIsStoredAsSent) {
  reptrace::testing::TestDatabase db;
  auto store = OpenStore(db);
  ASSERT_NE(store, nullptr);
  auto writer = NewWriter(*store);
  ASSERT_NE(writer, nullptr);
  const Flow flow{Ipv4(10, 0, 0, 1, 40000), Ipv4(10, 0, 0, 2, 80)};
  v1::Span span = ServerSpan({.span_id = 21, .service = "web\\tier\t2", .flow = flow,
                              .start_ns = kT0, .name = "GET /a\nb\r\\N \"q\" \xc3\xa9"});
  span.set_status_message(std::string("bad\0byte\\", 10));
  (*span.mutable_attributes())["k\"ey\\"] = "v\t\u0001al\n";
  (*span.mutable_attributes())["nul"] = std::string("a\0b", 3);
  (*span.mutable_attributes())["ctl"] = "\x1f\x7f\\\"";
  // Numbers at the ends of BIGINT's range (uint64 ids and hashes stored as signed).
  span.set_request_hash(uint64_t{1} << 63);
  span.set_response_hash(~uint64_t{0});
  ASSERT_TRUE(writer->WriteBatch("agent", Batch(1, {span})).ok());

  auto trace = store->GetTrace(21);
  ASSERT_TRUE(trace.ok()) << trace.status();
  ASSERT_EQ(trace->spans_size(), 1);
  const v1::Span& stored = trace->spans(0);
  EXPECT_EQ(stored.service(), "web\\tier\t2");
  EXPECT_EQ(stored.name(), "GET /a\nb\r\\N \"q\" \xc3\xa9");
  EXPECT_EQ(stored.status_message(), "badbyte\\");
  EXPECT_EQ(stored.attributes().at("k\"ey\\"), "v\t\u0001al\n");
  EXPECT_EQ(stored.attributes().at("nul"), "ab");
  EXPECT_EQ(stored.attributes().at("ctl"), "\x1f\x7f\\\"");
  EXPECT_EQ(stored.request_hash(), uint64_t{1} << 63);
  EXPECT_EQ(stored.response_hash(), ~uint64_t{0});
  EXPECT_EQ(stored.attributes().at("http.method"), "GET");
  auto traces = store->ListTraces("web\\tier\t2", 0);
  ASSERT_TRUE(traces.ok()) << traces.status();
  ASSERT_EQ(traces->size(), 1u);
  EXPECT_EQ(traces->front().root_name(), "GET /a\nb\r\\N \"q\" \xc3\xa9");
}

// Every field comes back as sent, at the ends of its column's range (the rows go to
// PostgreSQL in COPY's binary format, each field in its column's exact type).
TEST(StoreQueryTest, EveryFieldIsStoredAsSentAtTheEndsOfItsRange) {
  reptrace::testing::TestDatabase db;
  auto store = OpenStore(db);
  ASSERT_NE(store, nullptr);
  auto writer = NewWriter(*store);
  ASSERT_NE(writer, nullptr);
  v1::Span sent;
  sent.set_span_id(~uint64_t{0});
  sent.set_trace_id(~uint64_t{0});
  sent.set_kind(v1::SPAN_KIND_CLIENT);
  sent.set_service("svc");
  sent.set_node("node-1");
  sent.set_pid(~uint32_t{0});
  sent.set_tid(1);
  sent.set_process("proc --flag");
  sent.set_name("SET");
  sent.set_start_ns(1);
  sent.set_end_ns(std::numeric_limits<int64_t>::max() / 4);
  sent.set_status(v1::SPAN_STATUS_ERROR);
  sent.set_status_message("timeout");
  sent.mutable_local()->set_ip(std::string("\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01", 16));
  sent.mutable_local()->set_port(65535);
  sent.mutable_peer()->set_ip(std::string("\0\0\0\0", 4));
  sent.mutable_peer()->set_port(0);
  sent.set_request_offset(~uint64_t{0} - 1);
  sent.set_request_bytes(uint64_t{1} << 32);
  sent.set_response_offset(uint64_t{1} << 63);
  sent.set_response_bytes(0);
  sent.set_request_hash(1);
  sent.set_response_hash(uint64_t{1} << 62);
  sent.set_connection_id(~uint64_t{0} >> 1);
  (*sent.mutable_attributes())["db.system"] = "redis";
  (*sent.mutable_attributes())[""] = "";
  ASSERT_TRUE(writer->WriteBatch("agent", Batch(1, {sent})).ok());

  auto trace = store->GetTrace(~uint64_t{0});
  ASSERT_TRUE(trace.ok()) << trace.status();
  ASSERT_EQ(trace->spans_size(), 1);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(trace->spans(0), sent))
      << "stored:\n" << trace->spans(0).DebugString() << "sent:\n" << sent.DebugString();
}

// A COPY that fails for any reason but a stored span id (here a constraint) is an error
// for that batch, and the writer's connection is usable again for the next one.
TEST(StoreTest, ACopyThatFailsIsAnErrorAndTheWriterGoesOn) {
  reptrace::testing::TestDatabase db;
  auto store = OpenStore(db);
  ASSERT_NE(store, nullptr);
  auto writer = NewWriter(*store);
  ASSERT_NE(writer, nullptr);
  {
    pqxx::connection conn(db.conninfo());
    pqxx::nontransaction tx(conn);
    tx.exec0("ALTER TABLE spans ADD CONSTRAINT test_refuse CHECK (name <> 'refuse me')");
  }
  const Flow flow{Ipv4(10, 0, 0, 1, 40000), Ipv4(10, 0, 0, 2, 80)};
  const v1::Span refused = ServerSpan({.span_id = 31, .service = "nginx", .flow = flow,
                                       .start_ns = kT0, .name = "refuse me"});
  const v1::Span fine = ServerSpan({.span_id = 32, .service = "nginx", .flow = flow,
                                    .request_offset = 78, .start_ns = kT0 + kMs});

  auto failed = writer->WriteBatch("agent", Batch(1, {refused, fine}));
  auto next = writer->WriteBatch("agent", Batch(2, {fine}));

  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(failed.status().message()), ::testing::HasSubstr("test_refuse"));
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->spans_inserted, 1);
  EXPECT_EQ(CountRows(db, "SELECT count(*) FROM spans"), 1);
  EXPECT_EQ(CountRows(db, "SELECT count(*) FROM ingested_batches"), 1);
}

TEST(SpanLinkingTest, KeepAliveExchangesOnOneConnectionAreSeparateTraces) {
  reptrace::testing::TestDatabase db;
  auto store = OpenStore(db);
  ASSERT_NE(store, nullptr);
  auto writer = NewWriter(*store);
  ASSERT_NE(writer, nullptr);
  const Flow flow{Ipv4(10, 0, 0, 1, 41000), Ipv4(10, 0, 0, 2, 80)};
  std::vector<v1::Span> clients;
  std::vector<v1::Span> servers;
  for (uint64_t i = 0; i < 10; ++i) {
    const int64_t start = kT0 + static_cast<int64_t>(i) * 50 * kMs;
    clients.push_back(ClientSpan({.span_id = 100 + i, .service = "wrk", .flow = flow,
                                  .request_offset = i * 78, .start_ns = start}));
    servers.push_back(ServerSpan({.span_id = 200 + i, .service = "nginx", .flow = flow,
                                  .request_offset = i * 78, .start_ns = start + 100'000}));
  }

  // Servers first: every one of them waits for its client.
  ASSERT_TRUE(writer->WriteBatch("agent-nginx", Batch(1, servers)).ok());
  ASSERT_TRUE(writer->WriteBatch("agent-wrk", Batch(1, clients)).ok());

  auto traces = store->ListTraces("", 100);
  ASSERT_TRUE(traces.ok()) << traces.status();
  EXPECT_EQ(traces->size(), 10u);
  for (uint64_t i = 0; i < 10; ++i) {
    uint64_t trace_id = 0;
    EXPECT_EQ(ParentsOf(*store, 200 + i, &trace_id),
              (std::map<uint64_t, uint64_t>{{100 + i, 0}, {200 + i, 100 + i}}));
    EXPECT_EQ(trace_id, 100 + i);
  }
}

TEST(SpanLinkingTest, AReusedFourTupleLinksToTheNearestClientInEveryOrder) {
  const Flow flow{Ipv4(10, 0, 0, 1, 42000), Ipv4(10, 0, 0, 2, 6379)};
  const std::vector<v1::Span> spans = {
      ClientSpan({.span_id = 1, .service = "app", .flow = flow, .start_ns = kT0}),
      ServerSpan({.span_id = 2, .service = "redis", .flow = flow, .start_ns = kT0 + kMs}),
      // The same 4-tuple again, 30 s later, a new connection (offset 0 again).
      ClientSpan({.span_id = 3, .service = "app", .flow = flow, .start_ns = kT0 + 30 * kSecond}),
      ServerSpan({.span_id = 4, .service = "redis", .flow = flow,
                  .start_ns = kT0 + 30 * kSecond + kMs}),
      // And 5 minutes later: no client within the window is stored.
      ServerSpan({.span_id = 5, .service = "redis", .flow = flow,
                  .start_ns = kT0 + 300 * kSecond}),
  };
  // Among them: the late server first, then the early client it may adopt for a while.
  const std::vector<std::vector<int>> orders = {
      {0, 1, 2, 3, 4}, {3, 0, 1, 2, 4}, {4, 3, 2, 1, 0}, {1, 3, 0, 4, 2}, {2, 3, 1, 0, 4}};
  for (const std::vector<int>& order : orders) {
    SCOPED_TRACE(::testing::Message() << "arrival order " << order[0] << order[1]
                                      << order[2] << order[3] << order[4]);
    reptrace::testing::TestDatabase db;
    auto store = OpenStore(db);
    ASSERT_NE(store, nullptr);
    auto writer = NewWriter(*store);
    ASSERT_NE(writer, nullptr);
    uint64_t batch_id = 0;
    for (int i : order) {
      ASSERT_TRUE(writer->WriteBatch("agent", Batch(++batch_id, {spans[i]})).ok());
    }

    uint64_t trace_id = 0;
    EXPECT_EQ(ParentsOf(*store, 2, &trace_id), (std::map<uint64_t, uint64_t>{{1, 0}, {2, 1}}));
    EXPECT_EQ(trace_id, 1u);
    EXPECT_EQ(ParentsOf(*store, 4, &trace_id), (std::map<uint64_t, uint64_t>{{3, 0}, {4, 3}}));
    EXPECT_EQ(trace_id, 3u);
    EXPECT_EQ(ParentsOf(*store, 5, &trace_id), (std::map<uint64_t, uint64_t>{{5, 0}}));
    EXPECT_EQ(trace_id, 5u);
    // No summary is left behind for a trace id that lost its spans.
    auto traces = store->ListTraces("", 100);
    ASSERT_TRUE(traces.ok()) << traces.status();
    std::vector<uint64_t> ids;
    for (const auto& t : *traces) ids.push_back(t.trace_id());
    EXPECT_THAT(ids, ElementsAre(5, 3, 1));
  }
}

// Through a Service: the client connected to the virtual IP 10.96.0.10:80, DNAT sent the
// connection to the pod 10.0.0.3:8080, which sees the client's own address. No 4-tuple
// agrees; the bytes at the same offset do. A second client on its own connection sends
// the very same bytes to a pod it reaches directly: that one is taken by its exact other
// end and never given to the translated server. Every arrival order, one span a batch.
TEST(SpanLinkingTest, BothEndsThroughAServiceAddressTranslationLinkInEveryOrder) {
  const Flow translated_client{Ipv4(10, 0, 0, 1, 40001), Ipv4(10, 96, 0, 10, 80)};
  const Flow translated_server{Ipv4(10, 0, 0, 1, 40001), Ipv4(10, 0, 0, 3, 8080)};
  const Flow direct{Ipv4(10, 0, 0, 5, 40002), Ipv4(10, 0, 0, 3, 8080)};
  const std::vector<std::pair<std::string, v1::Span>> spans = {
      {"agent-a", ClientSpan({.span_id = 11, .service = "shop", .flow = translated_client,
                              .start_ns = kT0, .duration_ns = 5 * kMs})},
      {"agent-b", ServerSpan({.span_id = 12, .service = "web", .flow = translated_server,
                              .start_ns = kT0 + kMs, .duration_ns = 3 * kMs})},
      {"agent-c", ClientSpan({.span_id = 13, .service = "other", .flow = direct,
                              .start_ns = kT0 + kMs, .duration_ns = 3 * kMs})},
      {"agent-b", ServerSpan({.span_id = 14, .service = "web", .flow = direct,
                              .start_ns = kT0 + kMs, .duration_ns = 2 * kMs})},
  };
  const int orders_tried = InEveryArrivalOrder(spans, [&](Store& store) {
    uint64_t trace_id = 0;
    EXPECT_EQ(ParentsOf(store, 12, &trace_id),
              (std::map<uint64_t, uint64_t>{{11, 0}, {12, 11}}));
    EXPECT_EQ(trace_id, 11u);
    EXPECT_EQ(ParentsOf(store, 14, &trace_id),
              (std::map<uint64_t, uint64_t>{{13, 0}, {14, 13}}));
  });
  EXPECT_EQ(orders_tried, 24);

  // All four in one batch: linked in memory the same way.
  reptrace::testing::TestDatabase db;
  auto store = OpenStore(db);
  ASSERT_NE(store, nullptr);
  auto writer = NewWriter(*store);
  ASSERT_NE(writer, nullptr);
  std::vector<v1::Span> all;
  for (const auto& [agent, span] : spans) all.push_back(span);
  ASSERT_TRUE(writer->WriteBatch("agent-all", Batch(1, all)).ok());
  uint64_t trace_id = 0;
  EXPECT_EQ(ParentsOf(*store, 12, &trace_id), (std::map<uint64_t, uint64_t>{{11, 0}, {12, 11}}));
  EXPECT_EQ(ParentsOf(*store, 14, &trace_id), (std::map<uint64_t, uint64_t>{{13, 0}, {14, 13}}));
}

// In-band mode: the server's agent sends the server span with the client span its
// request's frame named as parent_span_id (a cross-process parent decided exactly). A
// client span that passive matching would prefer (the same 4-tuple, request offset and
// fingerprint, nearer in start time; and one through a Service's translation, matching
// by its end) never takes it over, whether it arrives before the server span, with it
// or after it; and the server span is in its in-band parent's trace (rooted at the
// parent's own local parent) whatever the order.
std::vector<std::pair<std::string, v1::Span>> InbandRequest() {
  const Flow to_api{Ipv4(10, 0, 0, 1, 43000), Ipv4(10, 0, 0, 2, 8080)};
  const Flow to_front{Ipv4(10, 0, 0, 9, 50000), Ipv4(10, 0, 0, 1, 80)};
  const Flow through_service{Ipv4(10, 0, 0, 1, 43000), Ipv4(10, 96, 0, 10, 80)};
  return {
      // The web process handles a request (root) and calls the API, framed in-band.
      {"agent-web", ServerSpan({.span_id = 1, .service = "web", .pid = 10, .flow = to_front,
                                .start_ns = kT0 - 10 * kSecond - kMs})},
      {"agent-web", ClientSpan({.span_id = 2, .local_parent_span_id = 1, .service = "web",
                                .pid = 10, .flow = to_api,
                                .start_ns = kT0 - 10 * kSecond})},
      // The API's server span, its parent from the frame.
      {"agent-api", ServerSpan({.span_id = 3, .local_parent_span_id = 2, .service = "api",
                                .pid = 20, .flow = to_api, .start_ns = kT0})},
      // Decoys, nearer in time than the in-band parent: on the same 4-tuple, and through a
      // Service (the same client end).
      {"agent-other", ClientSpan({.span_id = 4, .service = "other", .pid = 30,
                                  .flow = to_api, .start_ns = kT0 + kMs})},
      {"agent-other", ClientSpan({.span_id = 5, .service = "other", .pid = 30,
                                  .flow = through_service, .start_ns = kT0 + 2 * kMs})},
  };
}

void ExpectInbandParentKept(Store& store) {
  uint64_t trace_id = 0;
  EXPECT_EQ(ParentsOf(store, 3, &trace_id),
            (std::map<uint64_t, uint64_t>{{1, 0}, {2, 1}, {3, 2}}));
  EXPECT_EQ(trace_id, 1u);
  EXPECT_EQ(ParentsOf(store, 4, &trace_id), (std::map<uint64_t, uint64_t>{{4, 0}}));
  EXPECT_EQ(trace_id, 4u);
  EXPECT_EQ(ParentsOf(store, 5, &trace_id), (std::map<uint64_t, uint64_t>{{5, 0}}));
  EXPECT_EQ(trace_id, 5u);
  auto traces = store.ListTraces("", 100);
  ASSERT_TRUE(traces.ok()) << traces.status();
  std::vector<std::pair<uint64_t, int>> listed;
  for (const auto& t : *traces) listed.emplace_back(t.trace_id(), t.span_count());
  EXPECT_THAT(listed, ::testing::UnorderedElementsAre(std::make_pair(uint64_t{1}, 3),
                                                      std::make_pair(uint64_t{4}, 1),
                                                      std::make_pair(uint64_t{5}, 1)));
}

TEST(SpanLinkingTest, AnInbandParentIsNeverTakenOverByPassiveMatchingInAnyOrder) {
  const auto spans = InbandRequest();
  // One span a batch, in every order of the in-band parent, the server span and the
  // nearer decoy (the root and the translated decoy first, or last).
  const std::vector<std::vector<size_t>> heads = {{0, 4}, {}};
  int orders_tried = 0;
  for (const std::vector<size_t>& head : heads) {
    std::vector<size_t> middle = {1, 2, 3};
    do {
      std::vector<size_t> order = head;
      order.insert(order.end(), middle.begin(), middle.end());
      if (head.empty()) order.insert(order.end(), {4, 0});
      ASSERT_TRUE(InArrivalOrder(spans, order, ExpectInbandParentKept));
      ++orders_tried;
    } while (std::next_permutation(middle.begin(), middle.end()));
  }
  EXPECT_EQ(orders_tried, 12);
}

TEST(SpanLinkingTest, AnInbandParentIsKeptWhenTheDecoyComesInTheSameBatch) {
  const auto spans = InbandRequest();
  // Batches of one agent that sees everything: all in one batch (two orders), or the
  // server span together with the decoys and the parent before or after them.
  const std::vector<std::vector<std::vector<size_t>>> arrivals = {
      {{0, 1, 2, 3, 4}},
      {{4, 3, 2, 1, 0}},
      {{0, 1}, {2, 3, 4}},
      {{3, 2, 4}, {1, 0}},
  };
  for (const auto& batches : arrivals) {
    ::testing::Message described;
    for (const auto& batch : batches) {
      described << "[";
      for (size_t i : batch) described << i;
      described << "]";
    }
    SCOPED_TRACE(::testing::Message() << "batches " << described);
    reptrace::testing::TestDatabase db;
    auto store = OpenStore(db);
    ASSERT_NE(store, nullptr);
    auto writer = NewWriter(*store);
    ASSERT_NE(writer, nullptr);
    uint64_t batch_id = 0;
    for (const auto& batch : batches) {
      std::vector<v1::Span> batch_spans;
      for (size_t i : batch) batch_spans.push_back(spans[i].second);
      ASSERT_TRUE(writer->WriteBatch("agent-all", Batch(++batch_id, batch_spans)).ok());
    }
    ExpectInbandParentKept(*store);
  }
}

TEST(SpanLinkingTest, SpansWithoutAPortAreNeverLinkedAcrossProcesses) {
  reptrace::testing::TestDatabase db;
  auto store = OpenStore(db);
  ASSERT_NE(store, nullptr);
  auto writer = NewWriter(*store);
  ASSERT_NE(writer, nullptr);
  // Two unrelated Unix-domain conversations on two nodes: no IP, no port, offset 0.
  v1::Endpoint none;
  const Flow unix_socket{none, none};
  const Flow zero_ports{Ipv4(0, 0, 0, 0, 0), Ipv4(0, 0, 0, 0, 0)};
  ASSERT_TRUE(writer
                  ->WriteBatch("agent", Batch(1, {
      ClientSpan({.span_id = 1, .service = "app", .flow = unix_socket, .start_ns = kT0}),
      ServerSpan({.span_id = 2, .service = "dockerd", .flow = unix_socket,
                  .start_ns = kT0 + kMs}),
      ClientSpan({.span_id = 3, .service = "app", .flow = zero_ports, .start_ns = kT0}),
      ServerSpan({.span_id = 4, .service = "syslogd", .flow = zero_ports,
                  .start_ns = kT0 + kMs})}))
                  .ok());
  // And one arriving later, on its own.
  ASSERT_TRUE(writer
                  ->WriteBatch("agent", Batch(2, {ServerSpan({.span_id = 5,
                                                              .service = "dbus",
                                                              .flow = unix_socket,
                                                              .start_ns = kT0 + 2 * kMs})}))
                  .ok());

  auto traces = store->ListTraces("", 100);
  ASSERT_TRUE(traces.ok()) << traces.status();
  std::vector<uint64_t> ids;
  for (const auto& t : *traces) ids.push_back(t.trace_id());
  std::sort(ids.begin(), ids.end());
  EXPECT_THAT(ids, ElementsAre(1, 2, 3, 4, 5));
  EXPECT_EQ(CountRows(db, "SELECT count(*) FROM spans WHERE parent_span_id IS NOT NULL"), 0);
}

TEST(SpanLinkingTest, ConcurrentStreamsStillLinkBothEnds) {
  reptrace::testing::TestDatabase db;
  auto store = OpenStore(db);
  ASSERT_NE(store, nullptr);
  auto client_writer = NewWriter(*store);
  auto server_writer = NewWriter(*store);
  ASSERT_NE(client_writer, nullptr);
  ASSERT_NE(server_writer, nullptr);
  constexpr int kExchanges = 30;
  auto flow = [](int i) {
    return Flow{Ipv4(10, 0, 1, 1, 30000 + static_cast<uint32_t>(i)), Ipv4(10, 0, 2, 1, 80)};
  };

  std::thread clients([&] {
    for (int i = 0; i < kExchanges; ++i) {
      auto written = client_writer->WriteBatch(
          "agent-client", Batch(i + 1, {ClientSpan({.span_id = 1000 + uint64_t(i),
                                                    .service = "client", .flow = flow(i),
                                                    .start_ns = kT0 + i * kMs})}));
      EXPECT_TRUE(written.ok()) << written.status();
    }
  });
  std::thread servers([&] {
    for (int i = 0; i < kExchanges; ++i) {
      auto written = server_writer->WriteBatch(
          "agent-server", Batch(i + 1, {ServerSpan({.span_id = 2000 + uint64_t(i),
                                                    .service = "server", .flow = flow(i),
                                                    .start_ns = kT0 + i * kMs + 1000})}));
      EXPECT_TRUE(written.ok()) << written.status();
    }
  });
  clients.join();
  servers.join();

  auto traces = store->ListTraces("", 1000);
  ASSERT_TRUE(traces.ok()) << traces.status();
  EXPECT_EQ(traces->size(), static_cast<size_t>(kExchanges));
  for (const auto& trace : *traces) EXPECT_EQ(trace.span_count(), 2) << trace.trace_id();
}

// ---------------------------------------------------------------------------------------
// Queries

TEST(StoreQueryTest, ListTracesFiltersByServiceLimitsAndPutsTheNewestFirst) {
  reptrace::testing::TestDatabase db;
  auto store = OpenStore(db);
  ASSERT_NE(store, nullptr);
  auto writer = NewWriter(*store);
  ASSERT_NE(writer, nullptr);
  const Flow web{Ipv4(10, 0, 0, 1, 40000), Ipv4(10, 0, 0, 2, 80)};
  const Flow cache{Ipv4(10, 0, 0, 1, 40001), Ipv4(10, 0, 0, 4, 6379)};
  ASSERT_TRUE(writer
                  ->WriteBatch("agent", Batch(1, {
      ClientSpan({.span_id = 1, .service = "curl", .flow = web, .start_ns = kT0}),
      ServerSpan({.span_id = 2, .service = "nginx", .flow = web, .start_ns = kT0 + 1000}),
      ClientSpan({.span_id = 3, .service = "redis-cli", .flow = cache,
                  .start_ns = kT0 + kSecond}),
      ServerSpan({.span_id = 4, .service = "redis", .flow = cache,
                  .start_ns = kT0 + kSecond + 1000}),
      ClientSpan({.span_id = 5, .service = "curl", .flow = web, .request_offset = 78,
                  .start_ns = kT0 + 2 * kSecond}),
      ServerSpan({.span_id = 6, .service = "nginx", .flow = web, .request_offset = 78,
                  .start_ns = kT0 + 2 * kSecond + 1000})}))
                  .ok());

  auto ids = [&](const std::string& service, int limit) {
    std::vector<uint64_t> out;
    auto traces = store->ListTraces(service, limit);
    EXPECT_TRUE(traces.ok()) << traces.status();
    if (traces.ok()) {
      for (const auto& t : *traces) out.push_back(t.trace_id());
    }
    return out;
  };
  EXPECT_THAT(ids("", 0), ElementsAre(5, 3, 1));
  EXPECT_THAT(ids("nginx", 0), ElementsAre(5, 1));
  EXPECT_THAT(ids("redis", 0), ElementsAre(3));
  EXPECT_THAT(ids("", 2), ElementsAre(5, 3));
  EXPECT_THAT(ids("postgres", 0), IsEmpty());
}

TEST(StoreQueryTest, GetTraceByAnySpanIdReturnsTheWholeTraceInStartOrder) {
  reptrace::testing::TestDatabase db;
  auto store = OpenStore(db);
  ASSERT_NE(store, nullptr);
  auto writer = NewWriter(*store);
  ASSERT_NE(writer, nullptr);
  std::vector<v1::Span> spans;
  for (const auto& [agent, span] : FourSpanRequest(kT0)) spans.push_back(span);
  ASSERT_TRUE(writer->WriteBatch("agent", Batch(1, spans)).ok());

  auto by_leaf = store->GetTrace(kPythonServer);
  auto by_root = store->GetTrace(kCurlClient);

  ASSERT_TRUE(by_leaf.ok()) << by_leaf.status();
  ASSERT_TRUE(by_root.ok()) << by_root.status();
  EXPECT_EQ(by_leaf->trace_id(), kCurlClient);
  EXPECT_EQ(by_leaf->SerializeAsString(), by_root->SerializeAsString());
  std::vector<uint64_t> order;
  for (const v1::Span& span : by_leaf->spans()) order.push_back(span.span_id());
  // nginx's clock is behind: its spans start "before" curl's.
  EXPECT_THAT(order, ElementsAre(kNginxServer, kNginxClient, kCurlClient, kPythonServer));
  // The stored span comes back as the agent sent it, plus trace and resolved parent.
  v1::Span expected = spans[3];
  expected.set_trace_id(kCurlClient);
  expected.set_parent_span_id(kNginxClient);
  EXPECT_EQ(by_leaf->spans(3).DebugString(), expected.DebugString());
}

TEST(StoreQueryTest, GetTraceOfAnUnknownIdIsNotFound) {
  reptrace::testing::TestDatabase db;
  auto store = OpenStore(db);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->GetTrace(0x1234).status().code(), absl::StatusCode::kNotFound);
}

TEST(StoreQueryTest, QueriesSurviveTheDatabaseDroppingPooledConnections) {
  reptrace::testing::TestDatabase db;
  auto store = OpenStore(db);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->ListTraces("", 0).ok());  // leaves a connection in the pool
  {
    pqxx::connection admin(db.conninfo());
    pqxx::nontransaction tx(admin);
    tx.exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()");
  }

  auto traces = store->ListTraces("", 0);
  EXPECT_TRUE(traces.ok()) << traces.status();
}

TEST(StoreOpenTest, AnUnreachableDatabaseIsAOneLineError) {
  auto store = Store::Open("host=127.0.0.1 port=1 dbname=nothing connect_timeout=3");
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(store.status().message()),
              ::testing::StartsWith("cannot connect to database: "));
  EXPECT_EQ(store.status().message().find('\n'), absl::string_view::npos);
}

}  // namespace
}  // namespace reptrace::controller
