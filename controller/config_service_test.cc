// reptrace.v1.ConfigService through real servers on 127.0.0.1:0, real client stubs and a
// real PostgreSQL; "replicas" are two controller servers, each with its own Store and
// ConfigWatcher, on one database.
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <pqxx/pqxx>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "controller/config_validation.h"
#include "controller/controller_server.h"
#include "controller/store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/reptrace.grpc.pb.h"
#include "tests/testing/test_database.h"

namespace reptrace::controller {
namespace {

using ::testing::ElementsAre;

// One controller replica: its own Store (connections), server and ConfigWatcher.
struct Replica {
  std::unique_ptr<Store> store;
  std::unique_ptr<ControllerServer> server;
  std::unique_ptr<v1::ConfigService::Stub> stub;
};

class ConfigServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(db_.ok());
    StartReplica(&a_);
    StartReplica(&b_);
  }

  void TearDown() override {
    for (Replica* replica : {&a_, &b_}) {
      if (replica->server != nullptr) replica->server->Shutdown(absl::Seconds(1));
      replica->server.reset();
    }
  }

  void StartReplica(Replica* replica) {
    auto store = Store::Open(db_.conninfo());
    ASSERT_TRUE(store.ok()) << store.status();
    replica->store = std::move(*store);
    auto server = ControllerServer::Start("127.0.0.1:0", *replica->store);
    ASSERT_TRUE(server.ok()) << server.status();
    replica->server = std::move(*server);
    replica->stub = v1::ConfigService::NewStub(
        grpc::CreateChannel(replica->server->address(), grpc::InsecureChannelCredentials()));
  }

  static v1::TraceConfig Capturing(uint32_t bytes) {
    v1::TraceConfig config = DefaultConfig();
    config.set_capture_bytes(bytes);
    return config;
  }

  static grpc::Status Set(Replica& replica, const v1::TraceConfig& config,
                          uint64_t expected_version, const std::string& author,
                          v1::ConfigVersion* out = nullptr) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::SetConfigRequest request;
    *request.mutable_config() = config;
    request.set_expected_version(expected_version);
    request.set_author(author);
    v1::ConfigVersion response;
    grpc::Status status = replica.stub->SetConfig(&context, request, &response);
    if (out != nullptr) *out = response;
    return status;
  }

  static v1::ConfigVersion Get(Replica& replica) {
    grpc::ClientContext context;
    v1::ConfigVersion response;
    const grpc::Status status =
        replica.stub->GetConfig(&context, v1::GetConfigRequest(), &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }

  static std::vector<uint64_t> HistoryVersions(Replica& replica, int limit = 0) {
    grpc::ClientContext context;
    v1::ListConfigHistoryRequest request;
    request.set_limit(limit);
    v1::ListConfigHistoryResponse response;
    const grpc::Status status = replica.stub->ListConfigHistory(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    std::vector<uint64_t> versions;
    for (const v1::ConfigVersion& version : response.versions()) {
      versions.push_back(version.version());
    }
    return versions;
  }

  reptrace::testing::TestDatabase db_;
  Replica a_;
  Replica b_;
};

TEST_F(ConfigServiceTest, DefaultDocumentIsVersionOne) {
  const v1::ConfigVersion current = Get(a_);

  EXPECT_EQ(current.version(), 1u);
  EXPECT_EQ(current.config().SerializeAsString(), DefaultConfig().SerializeAsString());
  EXPECT_EQ(current.author(), "default");
  EXPECT_GT(current.created_ns(), 0);
  EXPECT_LE(current.created_ns(), absl::GetCurrentTimeNanos());
}

TEST_F(ConfigServiceTest, SetOnTheCurrentVersionStoresTheNextOne) {
  v1::ConfigVersion stored;
  const grpc::Status status = Set(a_, Capturing(64), 1, "alice@host", &stored);
  ASSERT_TRUE(status.ok()) << status.error_message();

  EXPECT_EQ(stored.version(), 2u);
  EXPECT_EQ(stored.author(), "alice@host");
  const v1::ConfigVersion current = Get(a_);
  EXPECT_EQ(current.version(), 2u);
  EXPECT_EQ(current.config().capture_bytes(), 64u);
  EXPECT_EQ(current.author(), "alice@host");
  EXPECT_EQ(current.created_ns(), stored.created_ns());
  EXPECT_EQ(Get(b_).version(), 2u);  // the other replica reads the same database

  grpc::ClientContext context;
  v1::ListConfigHistoryResponse history;
  ASSERT_TRUE(
      a_.stub->ListConfigHistory(&context, v1::ListConfigHistoryRequest(), &history).ok());
  ASSERT_EQ(history.versions_size(), 2);
  EXPECT_EQ(history.versions(0).version(), 2u);
  EXPECT_EQ(history.versions(0).author(), "alice@host");
  EXPECT_EQ(history.versions(0).config().capture_bytes(), 64u);
  EXPECT_EQ(history.versions(1).version(), 1u);
  EXPECT_EQ(history.versions(1).author(), "default");
}

TEST_F(ConfigServiceTest, StaleExpectedVersionIsRefusedAndChangesNothing) {
  ASSERT_TRUE(Set(a_, Capturing(64), 1, "alice").ok());

  const grpc::Status status = Set(b_, Capturing(32), 1, "bob");

  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(status.error_message(), "stale version 1: the current version is 2");
  EXPECT_EQ(Get(a_).config().capture_bytes(), 64u);
  EXPECT_THAT(HistoryVersions(a_), ElementsAre(2u, 1u));
  EXPECT_EQ(Set(b_, Capturing(32), 7, "bob").error_message(),
            "stale version 7: the current version is 2");
}

TEST_F(ConfigServiceTest, InvalidDocumentIsRefusedAndChangesNothing) {
  v1::TraceConfig config = DefaultConfig();
  v1::TraceFilter* filter = config.add_filters();
  filter->set_action(v1::TraceFilter::ACTION_EXCLUDE);
  filter->add_peer_cidrs("10.0.0.0/33");

  const grpc::Status status = Set(a_, config, 1, "alice");

  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(),
            "filters[0].peer_cidrs[0]: \"10.0.0.0/33\" is not a CIDR (prefix length 33 > 32)");
  EXPECT_EQ(Get(a_).version(), 1u);
  EXPECT_THAT(HistoryVersions(a_), ElementsAre(1u));
}

TEST_F(ConfigServiceTest, MissingDocumentIsRefused) {
  grpc::ClientContext context;
  v1::SetConfigRequest request;
  request.set_expected_version(1);
  v1::ConfigVersion response;

  const grpc::Status status = a_.stub->SetConfig(&context, request, &response);

  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Get(a_).version(), 1u);
}

TEST_F(ConfigServiceTest, EmptyAuthorIsStoredAsUnknown) {
  v1::ConfigVersion stored;
  ASSERT_TRUE(Set(a_, Capturing(8), 1, "", &stored).ok());
  EXPECT_EQ(stored.author(), "unknown");
  EXPECT_EQ(Get(a_).author(), "unknown");
}

TEST_F(ConfigServiceTest, HistoryIsNewestFirstAndLimited) {
  for (uint64_t v = 1; v <= 4; ++v) {
    ASSERT_TRUE(Set(a_, Capturing(static_cast<uint32_t>(v)), v, "alice").ok());
  }
  EXPECT_THAT(HistoryVersions(a_, 2), ElementsAre(5u, 4u));
  EXPECT_THAT(HistoryVersions(a_, 0), ElementsAre(5u, 4u, 3u, 2u, 1u));
  EXPECT_THAT(HistoryVersions(a_, -3), ElementsAre(5u, 4u, 3u, 2u, 1u));
}

TEST_F(ConfigServiceTest, ConcurrentSetsOnTwoReplicasOnTheSameVersionStoreOne) {
  constexpr int kPerReplica = 4;
  std::vector<std::future<grpc::Status>> results;
  for (int i = 0; i < 2 * kPerReplica; ++i) {
    Replica& replica = i % 2 == 0 ? a_ : b_;
    results.push_back(std::async(std::launch::async, [&replica, i] {
      return Set(replica, Capturing(static_cast<uint32_t>(i + 1)), 1, "racer");
    }));
  }
  int ok = 0;
  int stale = 0;
  for (auto& result : results) {
    const grpc::Status status = result.get();
    if (status.ok()) ++ok;
    if (status.error_code() == grpc::StatusCode::FAILED_PRECONDITION) ++stale;
  }
  EXPECT_EQ(ok, 1);
  EXPECT_EQ(stale, 2 * kPerReplica - 1);
  EXPECT_THAT(HistoryVersions(a_), ElementsAre(2u, 1u));
}

TEST_F(ConfigServiceTest, WatchSendsTheCurrentVersionFirst) {
  ASSERT_TRUE(Set(a_, Capturing(16), 1, "alice").ok());
  grpc::ClientContext context;
  auto watch = b_.stub->WatchConfig(&context, v1::WatchConfigRequest());

  v1::ConfigVersion first;
  ASSERT_TRUE(watch->Read(&first));

  EXPECT_EQ(first.version(), 2u);
  EXPECT_EQ(first.config().capture_bytes(), 16u);
  context.TryCancel();
  watch->Finish();
}

TEST_F(ConfigServiceTest, WatchOnOneReplicaReceivesAChangeSetOnAnotherWithinTwoSeconds) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  auto watch = b_.stub->WatchConfig(&context, v1::WatchConfigRequest());
  v1::ConfigVersion first;
  ASSERT_TRUE(watch->Read(&first));
  ASSERT_EQ(first.version(), 1u);

  std::vector<absl::Duration> delays;
  for (uint64_t v = 1; v <= 3; ++v) {
    ASSERT_TRUE(Set(a_, Capturing(static_cast<uint32_t>(10 * v)), v, "alice").ok());
    const absl::Time set_at = absl::Now();
    v1::ConfigVersion next;
    ASSERT_TRUE(watch->Read(&next));
    delays.push_back(absl::Now() - set_at);
    EXPECT_EQ(next.version(), v + 1);
    EXPECT_EQ(next.config().capture_bytes(), 10 * v);
    EXPECT_EQ(next.author(), "alice");
  }
  for (absl::Duration delay : delays) EXPECT_LT(delay, absl::Seconds(2));
  context.TryCancel();
  watch->Finish();
}

TEST_F(ConfigServiceTest, WatchSendsEveryVersionInOrderWhenChangesComeQuickly) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  auto watch = b_.stub->WatchConfig(&context, v1::WatchConfigRequest());
  v1::ConfigVersion first;
  ASSERT_TRUE(watch->Read(&first));

  for (uint64_t v = 1; v <= 5; ++v) {
    ASSERT_TRUE(Set(v % 2 == 0 ? a_ : b_, Capturing(static_cast<uint32_t>(v)), v, "x").ok());
  }
  std::vector<uint64_t> seen;
  for (int i = 0; i < 5; ++i) {
    v1::ConfigVersion next;
    ASSERT_TRUE(watch->Read(&next));
    seen.push_back(next.version());
  }
  EXPECT_THAT(seen, ElementsAre(2u, 3u, 4u, 5u, 6u));
  context.TryCancel();
  watch->Finish();
}

TEST_F(ConfigServiceTest, CancellingAWatchEndsItPromptly) {
  grpc::ClientContext context;
  auto watch = a_.stub->WatchConfig(&context, v1::WatchConfigRequest());
  v1::ConfigVersion first;
  ASSERT_TRUE(watch->Read(&first));

  const absl::Time cancelled_at = absl::Now();
  context.TryCancel();
  const grpc::Status status = watch->Finish();

  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_LT(absl::Now() - cancelled_at, absl::Seconds(1));
}

TEST_F(ConfigServiceTest, ServerShutdownEndsAWatchPromptlyWithUnavailable) {
  grpc::ClientContext context;
  auto watch = a_.stub->WatchConfig(&context, v1::WatchConfigRequest());
  v1::ConfigVersion first;
  ASSERT_TRUE(watch->Read(&first));

  const absl::Time shutdown_at = absl::Now();
  a_.server->Shutdown(absl::Seconds(10));
  v1::ConfigVersion more;
  EXPECT_FALSE(watch->Read(&more));
  const grpc::Status status = watch->Finish();
  a_.server->Wait();

  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_LT(absl::Now() - shutdown_at, absl::Seconds(2));
}

TEST_F(ConfigServiceTest, WatcherListensAgainAfterItsConnectionIsKilled) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  auto watch = b_.stub->WatchConfig(&context, v1::WatchConfigRequest());
  v1::ConfigVersion first;
  ASSERT_TRUE(watch->Read(&first));

  {
    // Both replicas' listening connections, once both are open.
    pqxx::connection admin(db_.conninfo());
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    size_t killed = 0;
    while (killed < 2 && absl::Now() < deadline) {
      pqxx::nontransaction tx(admin);
      const pqxx::result listening = tx.exec_params(
          "SELECT pid FROM pg_stat_activity"
          " WHERE datname = current_database() AND application_name = $1",
          ConfigWatcher::kApplicationName);
      if (listening.size() == 2) {
        for (const auto& row : listening) {
          tx.exec_params("SELECT pg_terminate_backend($1)", row[0].as<int>());
        }
        killed = listening.size();
      } else {
        absl::SleepFor(absl::Milliseconds(20));
      }
    }
    ASSERT_EQ(killed, 2u);
  }
  ASSERT_TRUE(Set(a_, Capturing(99), 1, "alice").ok());

  v1::ConfigVersion next;
  ASSERT_TRUE(watch->Read(&next));
  EXPECT_EQ(next.version(), 2u);
  EXPECT_EQ(next.config().capture_bytes(), 99u);
  context.TryCancel();
  watch->Finish();
}

}  // namespace
}  // namespace reptrace::controller
