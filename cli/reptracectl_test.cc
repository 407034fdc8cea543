// Runs the real reptracectl binary as a subprocess against a real gRPC server on
// 127.0.0.1:0 that implements QueryService with canned data and ConfigService over an
// in-memory history (test doubles for the controller, which is tested on its own).
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <google/protobuf/util/message_differencer.h>
#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "common/ids.h"
#include "gtest/gtest.h"
#include "proto/reptrace.grpc.pb.h"
#include "tests/testing/process.h"

namespace reptrace {
namespace {

constexpr uint64_t kTraceId = 0x5f0c1e2d3c4b5a69ULL;
constexpr int64_t kT0 = 1'700'000'000'000'000'000;  // 2023-11-14 22:13:20 UTC

v1::Span MakeSpan(uint64_t id, uint64_t parent, const std::string& service, v1::SpanKind kind,
                  int64_t start_us, int64_t end_us) {
  v1::Span span;
  span.set_trace_id(kTraceId);
  span.set_span_id(id);
  span.set_parent_span_id(parent);
  span.set_service(service);
  span.set_node("node-a");
  span.set_pid(100 + static_cast<uint32_t>(id));
  span.set_kind(kind);
  span.set_name("GET /api");
  span.set_start_ns(kT0 + start_us * 1000);
  span.set_end_ns(kT0 + end_us * 1000);
  span.set_status(v1::SPAN_STATUS_OK);
  return span;
}

// The QueryService test double: canned answers, and the last ListTraces request kept.
class CannedQueryService final : public v1::QueryService::Service {
 public:
  grpc::Status ListTraces(grpc::ServerContext*, const v1::ListTracesRequest* request,
                          v1::ListTracesResponse* response) override {
    {
      absl::MutexLock lock(&mu_);
      last_list_request_ = *request;
    }
    if (request->service() == "boom") {
      return grpc::Status(grpc::StatusCode::INTERNAL, "database is down\nsecond line");
    }
    v1::TraceSummary* newest = response->add_traces();
    newest->set_trace_id(kTraceId);
    newest->set_start_ns(kT0);
    newest->set_duration_ns(3'200'000);
    newest->set_span_count(4);
    newest->set_root_service("curl");
    newest->set_root_name("GET /api");
    newest->set_status(v1::SPAN_STATUS_ERROR);
    newest->add_services("curl");
    newest->add_services("nginx");
    newest->add_services("python");
    v1::TraceSummary* older = response->add_traces();
    older->set_trace_id(0x1234);
    older->set_start_ns(kT0 - 1'000'000'000);
    older->set_duration_ns(500);
    older->set_span_count(1);
    older->set_root_service("redis-cli");
    older->set_root_name("GET");
    older->set_status(v1::SPAN_STATUS_OK);
    older->add_services("redis-cli");
    return grpc::Status::OK;
  }

  grpc::Status GetTrace(grpc::ServerContext*, const v1::GetTraceRequest* request,
                        v1::Trace* response) override {
    if (request->trace_id() != FormatId(kTraceId)) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "no such trace");
    }
    response->set_trace_id(kTraceId);
    *response->add_spans() = MakeSpan(1, 0, "curl", v1::SPAN_KIND_CLIENT, 0, 3200);
    *response->add_spans() = MakeSpan(2, 1, "nginx", v1::SPAN_KIND_SERVER, 100, 3100);
    *response->add_spans() = MakeSpan(3, 2, "nginx", v1::SPAN_KIND_CLIENT, 300, 2800);
    v1::Span python = MakeSpan(4, 3, "python", v1::SPAN_KIND_SERVER, 450, 2450);
    python.set_status(v1::SPAN_STATUS_ERROR);
    *response->add_spans() = python;
    return grpc::Status::OK;
  }

  grpc::Status ListAgents(grpc::ServerContext*, const v1::ListAgentsRequest*,
                          v1::ListAgentsResponse* response) override {
    v1::AgentInfo* agent = response->add_agents();
    agent->set_agent_id("9b2f6c1e-5d4a-4c3b-8a29-0123456789ab");
    agent->set_node("node-a");
    agent->set_agent_version("0.1.0");
    agent->set_hostname("host-a");
    agent->set_connected(true);
    agent->set_connected_at_ns(kT0 - 60'000'000'000);
    agent->set_last_seen_ns(kT0);
    agent->set_config_version(5);
    agent->set_batches_stored(17);
    agent->set_spans_stored(4242);
    agent->mutable_counters()->set_hook_events_dropped(3);
    agent->mutable_counters()->set_spans_dropped(2);
    agent->mutable_counters()->set_records_malformed(1);
    return grpc::Status::OK;
  }

  grpc::Status GetStats(grpc::ServerContext*, const v1::GetStatsRequest*,
                        v1::GetStatsResponse* response) override {
    v1::AgentStats* agent = response->add_agents();
    agent->set_agent_id("9b2f6c1e-5d4a-4c3b-8a29-0123456789ab");
    agent->set_node("node-a");
    agent->set_connected(true);
    agent->set_events_received(5000);
    agent->set_spans_built(800);
    agent->set_spans_stored(790);
    agent->set_hook_events_rate_limited(12);
    agent->set_spans_dropped(10);
    response->mutable_sampling()->mutable_kept_probability()->set_traces(98);
    response->mutable_sampling()->mutable_kept_probability()->set_spans(392);
    response->mutable_sampling()->mutable_dropped_probability()->set_traces(102);
    response->mutable_sampling()->mutable_dropped_probability()->set_spans(408);
    response->mutable_sampling()->set_traces_pending(3);
    return grpc::Status::OK;
  }

  v1::ListTracesRequest last_list_request() {
    absl::MutexLock lock(&mu_);
    return last_list_request_;
  }

 private:
  absl::Mutex mu_;
  v1::ListTracesRequest last_list_request_ ABSL_GUARDED_BY(mu_);
};

// The ConfigService test double: an in-memory history that keeps the contract of
// proto/reptrace.proto (a change on another version than the current one is
// FAILED_PRECONDITION; a bad document INVALID_ARGUMENT naming the field), and counts
// the calls it gets.
class FakeConfigService final : public v1::ConfigService::Service {
 public:
  FakeConfigService() {
    v1::ConfigVersion first;
    first.set_version(1);
    first.set_author("controller");
    first.set_created_ns(kT0 - 60'000'000'000);
    first.mutable_config()->set_enabled(true);
    first.mutable_config()->mutable_sampling()->set_probability(1.0);
    history_.push_back(first);
    v1::ConfigVersion second = first;
    second.set_version(2);
    second.set_author("seed@ops");
    second.set_created_ns(kT0);
    second.mutable_config()->set_capture_bytes(32);
    v1::TraceFilter* filter = second.mutable_config()->add_filters();
    filter->set_action(v1::TraceFilter::ACTION_EXCLUDE);
    filter->add_peer_ports()->set_first(5432);
    history_.push_back(second);
  }

  grpc::Status GetConfig(grpc::ServerContext*, const v1::GetConfigRequest*,
                         v1::ConfigVersion* response) override {
    absl::MutexLock lock(&mu_);
    ++get_calls_;
    *response = history_.back();
    return grpc::Status::OK;
  }

  grpc::Status SetConfig(grpc::ServerContext*, const v1::SetConfigRequest* request,
                         v1::ConfigVersion* response) override {
    absl::MutexLock lock(&mu_);
    ++set_calls_;
    last_set_request_ = *request;
    if (another_change_before_next_set_) {  // another operator was quicker
      another_change_before_next_set_ = false;
      AppendLocked(history_.back().config(), "someone@else");
    }
    const uint64_t current = history_.back().version();
    if (request->expected_version() != current) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          absl::StrCat("expected version ", request->expected_version(),
                                       ", but the current version is ", current));
    }
    const std::string invalid = Validate(request->config());
    if (!invalid.empty()) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, invalid);
    *response = AppendLocked(request->config(),
                             request->author().empty() ? "unknown" : request->author());
    return grpc::Status::OK;
  }

  grpc::Status ListConfigHistory(grpc::ServerContext*, const v1::ListConfigHistoryRequest* request,
                                 v1::ListConfigHistoryResponse* response) override {
    absl::MutexLock lock(&mu_);
    last_history_limit_ = request->limit();
    const int limit = request->limit() == 0 ? 20 : std::min(request->limit(), 1000);
    for (auto it = history_.rbegin(); it != history_.rend() && response->versions_size() < limit;
         ++it) {
      *response->add_versions() = *it;
    }
    return grpc::Status::OK;
  }

  void ChangeBeforeNextSet() {
    absl::MutexLock lock(&mu_);
    another_change_before_next_set_ = true;
  }
  v1::ConfigVersion current() {
    absl::MutexLock lock(&mu_);
    return history_.back();
  }
  v1::SetConfigRequest last_set_request() {
    absl::MutexLock lock(&mu_);
    return last_set_request_;
  }
  int get_calls() {
    absl::MutexLock lock(&mu_);
    return get_calls_;
  }
  int set_calls() {
    absl::MutexLock lock(&mu_);
    return set_calls_;
  }
  int last_history_limit() {
    absl::MutexLock lock(&mu_);
    return last_history_limit_;
  }

 private:
  // The rules of the real controller that these tests rely on.
  static std::string Validate(const v1::TraceConfig& config) {
    if (config.capture_bytes() > 128) {
      return absl::StrCat("capture_bytes: ", config.capture_bytes(), " is above 128");
    }
    const double p = config.sampling().probability();
    if (!(p >= 0 && p <= 1)) return absl::StrCat("sampling.probability: ", p, " is not in [0, 1]");
    for (int i = 0; i < config.filters_size(); ++i) {
      if (config.filters(i).action() == v1::TraceFilter::ACTION_UNSPECIFIED) {
        return absl::StrCat("filters[", i, "].action: a filter must include or exclude");
      }
    }
    return "";
  }

  v1::ConfigVersion AppendLocked(const v1::TraceConfig& config, const std::string& author)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    v1::ConfigVersion next;
    next.set_version(history_.back().version() + 1);
    *next.mutable_config() = config;
    next.set_author(author);
    next.set_created_ns(history_.back().created_ns() + 1'000'000'000);
    history_.push_back(next);
    return next;
  }

  absl::Mutex mu_;
  std::vector<v1::ConfigVersion> history_ ABSL_GUARDED_BY(mu_);
  v1::SetConfigRequest last_set_request_ ABSL_GUARDED_BY(mu_);
  bool another_change_before_next_set_ ABSL_GUARDED_BY(mu_) = false;
  int get_calls_ ABSL_GUARDED_BY(mu_) = 0;
  int set_calls_ ABSL_GUARDED_BY(mu_) = 0;
  int last_history_limit_ ABSL_GUARDED_BY(mu_) = -1;
};

using testing::CommandResult;
using testing::ProcessOptions;

std::string ReptracectlPath() {
  const char* build_dir = std::getenv("REPTRACE_BUILD_DIR");
  return absl::StrCat(build_dir == nullptr ? "." : build_dir, "/cli/reptracectl");
}

// How reptracectl runs here: exactly the environment `env` (plus TZ=UTC), the given args.
ProcessOptions ReptracectlOptions(std::map<std::string, std::string> env) {
  ProcessOptions options;
  options.clear_env = true;
  options.env = std::move(env);
  options.env["TZ"] = "UTC";
  return options;
}

std::vector<std::string> ReptracectlArgv(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {ReptracectlPath()};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

// Runs reptracectl with `args` and exactly the environment `env` (plus TZ=UTC), capturing
// its output; kills it after `limit` (a failure, and exit_code -1).
CommandResult RunReptracectl(const std::vector<std::string>& args,
                             std::map<std::string, std::string> env = {},
                             absl::Duration limit = absl::Seconds(30)) {
  CommandResult result =
      testing::RunCommand(ReptracectlArgv(args), ReptracectlOptions(std::move(env)), limit);
  if (result.timed_out) {
    ADD_FAILURE() << "reptracectl did not finish within " << limit;
    result.exit_code = -1;
  }
  return result;
}

// Runs reptracectl with its stdout, stderr and stdin on a pseudo-terminal and returns
// what it wrote there (the terminal turns "\n" into "\r\n").
std::string RunReptracectlOnTerminal(const std::vector<std::string>& args,
                                     std::map<std::string, std::string> env) {
  int master = -1;
  int terminal = -1;
  char terminal_path[256];
  if (openpty(&master, &terminal, terminal_path, nullptr, nullptr) != 0) {
    ADD_FAILURE() << "openpty: " << errno;
    return "";
  }
  fcntl(master, F_SETFD, FD_CLOEXEC);
  fcntl(terminal, F_SETFD, FD_CLOEXEC);
  ProcessOptions options = ReptracectlOptions(std::move(env));
  options.stdin_path = options.stdout_path = options.stderr_path = terminal_path;
  testing::Process process(ReptracectlArgv(args), options);
  // Our end of the terminal stays open until the child has exited, so reading never
  // fails early; once it has exited, what is left is drained.
  std::string output;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  bool running = true;
  while (absl::Now() < deadline) {
    running = process.Running();
    pollfd fd = {master, POLLIN, 0};
    if (poll(&fd, 1, running ? 50 : 0) <= 0) {
      if (running) continue;
      break;  // exited and drained
    }
    char buffer[4096];
    const ssize_t n = read(master, buffer, sizeof(buffer));
    if (n <= 0) break;
    output.append(buffer, static_cast<size_t>(n));
  }
  process.Stop(absl::Seconds(1));  // no-op if it has exited
  close(terminal);
  close(master);
  return output;
}

std::vector<std::string> Lines(const std::string& text) {
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
}

class ReptracectlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    builder.RegisterService(&config_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
    address_ = absl::StrCat("127.0.0.1:", port_);
  }
  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  }

  CannedQueryService service_;
  FakeConfigService config_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::string address_;
};

TEST_F(ReptracectlTest, TracesJsonListsTracesNewestFirstAndPassesFilters) {
  CommandResult run = RunReptracectl(
      {"--controller", address_, "traces", "--service", "nginx", "--limit", "5", "--json"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.err, "");
  nlohmann::json doc = nlohmann::json::parse(run.out);
  ASSERT_EQ(doc["traces"].size(), 2u) << run.out;
  EXPECT_EQ(doc["traces"][0]["trace_id"], FormatId(kTraceId));
  EXPECT_EQ(doc["traces"][0]["duration_ns"], 3'200'000);
  EXPECT_EQ(doc["traces"][0]["status"], "error");
  EXPECT_EQ(doc["traces"][0]["services"], nlohmann::json({"curl", "nginx", "python"}));
  EXPECT_EQ(doc["traces"][1]["trace_id"], "0000000000001234");

  v1::ListTracesRequest request = service_.last_list_request();
  EXPECT_EQ(request.service(), "nginx");
  EXPECT_EQ(request.limit(), 5);
}

TEST_F(ReptracectlTest, TracesTableHasOneRowPerTrace) {
  CommandResult run = RunReptracectl({"--controller=" + address_, "traces"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  std::vector<std::string> lines = Lines(run.out);
  ASSERT_EQ(lines.size(), 3u) << run.out;
  EXPECT_TRUE(absl::StartsWith(lines[0], "TRACE ID")) << run.out;
  EXPECT_TRUE(absl::StartsWith(lines[1], "5f0c1e2d3c4b5a69  2023-11-14 22:13:20.000  3.20ms"))
      << run.out;
  EXPECT_TRUE(absl::EndsWith(lines[1], "error   curl,nginx,python")) << run.out;
  EXPECT_EQ(service_.last_list_request().limit(), 0);
}

TEST_F(ReptracectlTest, TraceShowsAWaterfallInTreeOrder) {
  CommandResult run = RunReptracectl({"--controller", address_, "trace", "5F0C1E2D3C4B5A69"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.err, "");
  // stdout is a pipe: ASCII only.
  for (char c : run.out) ASSERT_LT(static_cast<unsigned char>(c), 0x80) << run.out;
  EXPECT_EQ(run.out,
            "trace 5f0c1e2d3c4b5a69  3.20ms  4 spans  started 2023-11-14 22:13:20.000\n"
            "|0                                 3.20ms|\n"
            "|########################################| curl client GET /api  3.20ms\n"
            "| ###################################### |   nginx server GET /api  3.00ms\n"
            "|   ################################     |     nginx client GET /api  2.50ms\n"
            "|     ##########################         |       python server GET /api  2.00ms"
            " ERROR\n");
}

TEST_F(ReptracectlTest, Utf8TerminalGetsBlocksUnlessAsciiOrNoColor) {
  const std::vector<std::string> args = {"--controller", address_, "trace", FormatId(kTraceId)};
  const std::string full_block = "\xE2\x96\x88";
  std::string utf8 = RunReptracectlOnTerminal(args, {{"LANG", "C.UTF-8"}});
  EXPECT_TRUE(absl::StrContains(utf8, full_block)) << utf8;
  EXPECT_FALSE(absl::StrContains(utf8, "#")) << utf8;

  std::string no_color =
      RunReptracectlOnTerminal(args, {{"LANG", "C.UTF-8"}, {"NO_COLOR", "1"}});
  EXPECT_TRUE(absl::StrContains(no_color, "|####")) << no_color;
  EXPECT_FALSE(absl::StrContains(no_color, full_block)) << no_color;

  std::vector<std::string> ascii_args = args;
  ascii_args.push_back("--ascii");
  std::string ascii = RunReptracectlOnTerminal(ascii_args, {{"LANG", "C.UTF-8"}});
  EXPECT_TRUE(absl::StrContains(ascii, "|####")) << ascii;

  std::string c_locale = RunReptracectlOnTerminal(args, {{"LANG", "C"}});
  EXPECT_TRUE(absl::StrContains(c_locale, "|####")) << c_locale;
}

TEST_F(ReptracectlTest, TraceJsonHasTheContractShape) {
  CommandResult run = RunReptracectl({"--controller", address_, "trace", FormatId(kTraceId), "--json"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  nlohmann::json doc = nlohmann::json::parse(run.out);
  EXPECT_EQ(doc["trace_id"], FormatId(kTraceId));
  ASSERT_EQ(doc["spans"].size(), 4u);
  EXPECT_EQ(doc["spans"][0]["parent_span_id"], "");
  EXPECT_EQ(doc["spans"][3]["parent_span_id"], "0000000000000003");
  EXPECT_EQ(doc["spans"][3]["status"], "error");
  EXPECT_EQ(doc["spans"][3]["pid"], 104);
  EXPECT_EQ(doc["spans"][3]["duration_ns"], 2'000'000);
}

TEST_F(ReptracectlTest, UnknownTraceIsNotFound) {
  CommandResult run = RunReptracectl({"--controller", address_, "trace", "ff"});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_EQ(run.out, "");
  EXPECT_EQ(run.err, "reptracectl: trace 00000000000000ff not found\n");
}

TEST_F(ReptracectlTest, AgentsUsesTheControllerFromTheEnvironment) {
  CommandResult run = RunReptracectl({"agents"}, {{"REPTRACE_CONTROLLER", address_}});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  std::vector<std::string> lines = Lines(run.out);
  ASSERT_EQ(lines.size(), 2u) << run.out;
  EXPECT_EQ(lines[0],
            "NODE    AGENT ID                              VERSION  CONNECTED  LAST SEEN       "
            "         CONFIG  BATCHES  SPANS  HOOK DROPS  RATE LIMITED  SPAN DROPS  MALFORMED  "
            "NO CONNECTION  UNHOOKED PEERS");
  EXPECT_EQ(lines[1],
            "node-a  9b2f6c1e-5d4a-4c3b-8a29-0123456789ab  0.1.0    yes        2023-11-14 "
            "22:13:20.000  5       17       4242   3           0             2           1          "
            "0              0");
}

TEST_F(ReptracectlTest, StatsPrintsTheAgentsAndSamplingTables) {
  CommandResult run = RunReptracectl({"--controller", address_, "stats"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  std::vector<std::string> lines = Lines(run.out);
  ASSERT_EQ(lines.size(), 10u) << run.out;  // Lines() skips the blank line
  EXPECT_EQ(lines[0], "Agents");
  EXPECT_EQ(lines[2],
            "node-a  9b2f6c1e-5d4a-4c3b-8a29-0123456789ab  yes        5000    800          "
            "790           0           12            0          0              10          0");
  EXPECT_EQ(lines[3], "Sampling (all controllers)");
  EXPECT_EQ(lines[7], "kept: probability     98      392");
  EXPECT_EQ(lines[8], "dropped: probability  102     408");
  EXPECT_EQ(lines[9], "pending               3       -");
}

TEST_F(ReptracectlTest, StatsJson) {
  CommandResult run = RunReptracectl({"--controller", address_, "stats", "--json"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  nlohmann::json doc = nlohmann::json::parse(run.out);
  ASSERT_EQ(doc["agents"].size(), 1u);
  EXPECT_EQ(doc["agents"][0]["node"], "node-a");
  EXPECT_EQ(doc["agents"][0]["spans_stored"], 790);
  EXPECT_EQ(doc["agents"][0]["drops"]["hook_events_rate_limited"], 12);
  EXPECT_EQ(doc["sampling"]["kept"]["probability"]["traces"], 98);
  EXPECT_EQ(doc["sampling"]["dropped"]["probability"]["spans"], 408);
  EXPECT_EQ(doc["sampling"]["traces_pending"], 3);
}

TEST_F(ReptracectlTest, AgentsJson) {
  CommandResult run = RunReptracectl({"--controller", address_, "agents", "--json"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  nlohmann::json doc = nlohmann::json::parse(run.out);
  ASSERT_EQ(doc["agents"].size(), 1u);
  EXPECT_EQ(doc["agents"][0]["node"], "node-a");
  EXPECT_EQ(doc["agents"][0]["connected"], true);
  EXPECT_EQ(doc["agents"][0]["counters"]["hook_events_dropped"], 3);
}

TEST_F(ReptracectlTest, ServerErrorIsOneLineAndExitOne) {
  CommandResult run = RunReptracectl({"--controller", address_, "traces", "--service", "boom"});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_EQ(run.out, "");
  EXPECT_EQ(run.err, absl::StrCat("reptracectl: controller at ", address_,
                                  " failed ListTraces: INTERNAL: database is down second line\n"));
}

// --- config ---

using google::protobuf::util::MessageDifferencer;

// A file in a fresh directory, removed with the object.
class TempFile {
 public:
  TempFile(const std::string& name, const std::string& contents)
      : dir_(testing::MakeTempDir("reptracectl_test")), path_(dir_ + "/" + name) {
    std::ofstream(path_) << contents;
  }
  ~TempFile() { testing::RemoveTree(dir_); }
  const std::string& path() const { return path_; }

 private:
  std::string dir_;
  std::string path_;
};

std::string Hostname() {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  return host;
}

TEST_F(ReptracectlTest, ConfigGetShowsVersionAuthorTimeAndTheDocument) {
  CommandResult run = RunReptracectl({"--controller", address_, "config", "get"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.err, "");
  EXPECT_TRUE(absl::StartsWith(run.out,
                               "version: 2\n"
                               "author: seed@ops\n"
                               "created: 2023-11-14 22:13:20.000\n"
                               "config:\n"
                               "  enabled: true\n"
                               "  filters:\n"
                               "    - action: ACTION_EXCLUDE\n"))
      << run.out;
  EXPECT_TRUE(absl::StrContains(run.out,
                                "  trace_unix_sockets: false\n"
                                "  capture_bytes: 32\n"
                                "  max_events_per_second: 0\n"
                                "  sampling:\n"
                                "    probability: 1\n"))
      << run.out;
}

TEST_F(ReptracectlTest, ConfigGetJsonUsesProtobufsMappingWithEveryPrimitive) {
  CommandResult run = RunReptracectl({"--controller", address_, "config", "get", "--json"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  nlohmann::json doc = nlohmann::json::parse(run.out);
  EXPECT_EQ(doc["version"], 2);
  EXPECT_EQ(doc["author"], "seed@ops");
  EXPECT_EQ(doc["created_ns"], kT0);
  EXPECT_EQ(doc["config"]["enabled"], true);
  EXPECT_EQ(doc["config"]["trace_unix_sockets"], false);  // a default, still shown
  EXPECT_EQ(doc["config"]["max_events_per_second"], 0);
  EXPECT_EQ(doc["config"]["sampling"]["probability"], 1.0);
  EXPECT_EQ(doc["config"]["filters"][0]["action"], "ACTION_EXCLUDE");
  EXPECT_EQ(doc["config"]["filters"][0]["peer_ports"][0]["first"], 5432);
}

TEST_F(ReptracectlTest, ConfigSetChangesExactlyTheAssignedFieldsOfTheVersionRead) {
  const v1::ConfigVersion before = config_.current();
  CommandResult run = RunReptracectl(
      {"--controller", address_, "config", "set", "enabled=false", "sampling.probability=0.5",
       "sampling.keep_errors=true", R"(inband_ports=[{"first":6379}])", "--author", "alice@a"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.out, "config version 3 set (was 2)\n");
  EXPECT_EQ(run.err, "");

  const v1::SetConfigRequest request = config_.last_set_request();
  EXPECT_EQ(request.expected_version(), 2u);
  EXPECT_EQ(request.author(), "alice@a");
  v1::TraceConfig expected = before.config();
  expected.set_enabled(false);
  expected.mutable_sampling()->set_probability(0.5);
  expected.mutable_sampling()->set_keep_errors(true);
  expected.add_inband_ports()->set_first(6379);
  EXPECT_TRUE(MessageDifferencer::Equals(request.config(), expected))
      << request.config().DebugString();
}

TEST_F(ReptracectlTest, ConfigSetAuthorIsUserAtHostByDefault) {
  CommandResult run = RunReptracectl({"config", "set", "capture_bytes=64"},
                                     {{"REPTRACE_CONTROLLER", address_}, {"USER", "bob"}});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(config_.last_set_request().author(), "bob@" + Hostname());
  EXPECT_EQ(config_.current().author(), "bob@" + Hostname());
  EXPECT_EQ(config_.current().config().capture_bytes(), 64u);
}

TEST_F(ReptracectlTest, ConfigSetWithAnUnknownKeyOrABadValueSendsNothing) {
  CommandResult unknown =
      RunReptracectl({"--controller", address_, "config", "set", "enabled=false",
                      "sampling.rate=0.5"});
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_EQ(unknown.out, "");
  EXPECT_EQ(unknown.err,
            "reptracectl: unknown config key \"sampling.rate\": Sampling has no field \"rate\" "
            "(its fields: probability, keep_errors, keep_slower_than_ms)\n");

  CommandResult bad_value =
      RunReptracectl({"--controller", address_, "config", "set", "capture_bytes=lots"});
  EXPECT_EQ(bad_value.exit_code, 2);
  EXPECT_EQ(bad_value.err,
            "reptracectl: bad value for capture_bytes: expected a number, got \"lots\"\n");

  EXPECT_EQ(config_.set_calls(), 0);
  EXPECT_EQ(config_.current().version(), 2u);
}

TEST_F(ReptracectlTest, ConfigSetFromAJsonFileReplacesTheCurrentVersion) {
  TempFile file("config.json", R"({"enabled": true, "capture_bytes": 16,
      "sampling": {"probability": 0.1, "keep_errors": true},
      "filters": [{"action": "ACTION_INCLUDE", "services": ["checkout"]}]})");
  CommandResult run =
      RunReptracectl({"--controller", address_, "config", "set", "-f", file.path(), "--json"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  nlohmann::json doc = nlohmann::json::parse(run.out);
  EXPECT_EQ(doc["version"], 3);
  EXPECT_EQ(doc["config"]["filters"][0]["services"], nlohmann::json({"checkout"}));

  const v1::SetConfigRequest request = config_.last_set_request();
  EXPECT_EQ(request.expected_version(), 2u);
  EXPECT_EQ(request.config().capture_bytes(), 16u);
  EXPECT_EQ(request.config().sampling().probability(), 0.1);
  EXPECT_EQ(request.config().inband_ports_size(), 0);  // absent from the file: empty
  EXPECT_EQ(request.config().filters(0).action(), v1::TraceFilter::ACTION_INCLUDE);
}

TEST_F(ReptracectlTest, ConfigSetFromAYamlFileWithAnExpectedVersion) {
  TempFile file("config.yaml",
                "# trace redis in-band, nothing else\n"
                "enabled: true\n"
                "inband_ports:\n"
                "  - first: 6379\n"
                "filters:\n"
                "  - action: ACTION_INCLUDE\n"
                "    peer_ports: [{first: 6379}]\n");
  CommandResult run = RunReptracectl({"--controller", address_, "config", "set",
                                      "--expected-version", "2", "--file=" + file.path()});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.out, "config version 3 set (was 2)\n");
  EXPECT_EQ(config_.get_calls(), 0);  // the version was given
  const v1::TraceConfig config = config_.current().config();
  EXPECT_EQ(config.inband_ports(0).first(), 6379u);
  EXPECT_EQ(config.filters(0).peer_ports(0).first(), 6379u);
  EXPECT_EQ(config.capture_bytes(), 0u);
}

TEST_F(ReptracectlTest, ConfigSetFileWithAnUnknownFieldSendsNothing) {
  TempFile file("config.yaml", "enabled: true\nsampling:\n  rate: 0.5\n");
  CommandResult run = RunReptracectl({"--controller", address_, "config", "set", "-f", file.path()});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_TRUE(absl::StartsWith(run.err,
                               absl::StrCat("reptracectl: ", file.path(),
                                            ": unknown config field \"sampling.rate\"")))
      << run.err;
  EXPECT_EQ(config_.set_calls(), 0);
}

TEST_F(ReptracectlTest, StaleVersionIsExplainedAndNothingIsSet) {
  TempFile file("config.json", R"({"enabled": false})");
  CommandResult run = RunReptracectl(
      {"--controller", address_, "config", "set", "-f", file.path(), "--expected-version", "1"});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_EQ(run.out, "");
  EXPECT_EQ(run.err,
            "reptracectl: the config is no longer at version 1: someone else changed it "
            "meanwhile (controller: expected version 1, but the current version is 2); nothing "
            "was set: check 'reptracectl config get' and retry\n");
  EXPECT_EQ(config_.current().version(), 2u);
}

TEST_F(ReptracectlTest, ChangeByAnotherOperatorBetweenReadAndSetIsRefused) {
  config_.ChangeBeforeNextSet();
  CommandResult run = RunReptracectl({"--controller", address_, "config", "set", "enabled=false"});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_TRUE(absl::StartsWith(run.err,
                               "reptracectl: the config is no longer at version 2: someone else "
                               "changed it meanwhile"))
      << run.err;
  EXPECT_EQ(config_.current().author(), "someone@else");
  EXPECT_TRUE(config_.current().config().enabled());
}

TEST_F(ReptracectlTest, DocumentRefusedByTheControllerShowsItsReason) {
  CommandResult run =
      RunReptracectl({"--controller", address_, "config", "set", "capture_bytes=200"});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_EQ(run.err, "reptracectl: the controller refused the config: capture_bytes: 200 is above 128\n");
  EXPECT_EQ(config_.current().version(), 2u);
}

TEST_F(ReptracectlTest, ConfigHistoryListsVersionsNewestFirst) {
  CommandResult run = RunReptracectl({"--controller", address_, "config", "history"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.out,
            "VERSION  AUTHOR      TIME                     ENABLED  SAMPLING  FILTERS\n"
            "2        seed@ops    2023-11-14 22:13:20.000  yes      1         1\n"
            "1        controller  2023-11-14 22:12:20.000  yes      1         0\n");
  EXPECT_EQ(config_.last_history_limit(), 0);

  CommandResult json =
      RunReptracectl({"--controller", address_, "config", "history", "--limit", "1", "--json"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  nlohmann::json doc = nlohmann::json::parse(json.out);
  ASSERT_EQ(doc["versions"].size(), 1u);
  EXPECT_EQ(doc["versions"][0]["version"], 2);
  EXPECT_EQ(doc["versions"][0]["config"]["capture_bytes"], 32);
  EXPECT_EQ(config_.last_history_limit(), 1);
}

// A TCP port bound but not listening: connections to it are refused, and no other
// process can take it while the test runs.
class ClosedPort : public testing::BoundPort {
 public:
  ClosedPort() {
    if (port() == 0) ADD_FAILURE() << "bind: " << errno;
  }
};

TEST(ReptracectlUnreachableTest, ClosedPortIsExitOneAndExactlyOneLine) {
  ClosedPort closed;
  const std::string address = absl::StrCat("127.0.0.1:", closed.port());
  for (const std::vector<std::string>& command : std::vector<std::vector<std::string>>{
           {"traces"}, {"trace", "abc"}, {"agents", "--json"}, {"config", "get"},
           {"config", "history"}, {"config", "set", "enabled=true"}}) {
    std::vector<std::string> args = {"--controller", address};
    args.insert(args.end(), command.begin(), command.end());
    CommandResult run = RunReptracectl(args);
    EXPECT_EQ(run.exit_code, 1) << command[0];
    EXPECT_EQ(run.out, "") << command[0];
    EXPECT_EQ(run.err, absl::StrCat("reptracectl: cannot reach controller at ", address,
                                    ": connection refused\n"))
        << command[0];
  }
}

TEST(ReptracectlUnreachableTest, SilentControllerHitsTheDeadline) {
  // Listening, so the TCP handshake completes, but nobody ever answers.
  ClosedPort silent;
  ASSERT_EQ(listen(silent.fd(), 16), 0);
  const std::string address = absl::StrCat("127.0.0.1:", silent.port());
  const auto start = std::chrono::steady_clock::now();
  CommandResult run = RunReptracectl({"--controller", address, "--timeout", "1", "agents"});
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_EQ(run.err,
            absl::StrCat("reptracectl: cannot reach controller at ", address,
                         ": no answer within 1s\n"));
  EXPECT_GE(elapsed, std::chrono::milliseconds(900));
  EXPECT_LT(elapsed, std::chrono::seconds(10));
}

TEST(ReptracectlUsageTest, HelpGoesToStdoutWithExitZero) {
  CommandResult run = RunReptracectl({"--help"});
  EXPECT_EQ(run.exit_code, 0);
  EXPECT_TRUE(absl::StartsWith(run.out, "usage: reptracectl [--controller HOST:PORT]")) << run.out;
  EXPECT_EQ(run.err, "");

  run = RunReptracectl({"trace", "--help"});
  EXPECT_EQ(run.exit_code, 0);
  EXPECT_TRUE(absl::StartsWith(run.out, "usage: reptracectl [GLOBAL FLAGS] trace ID")) << run.out;
}

TEST(ReptracectlUsageTest, UsageErrorsAreOneLineWithExitTwo) {
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"frobnicate"}, {"traces", "--nope"}, {"trace", "not-hex"}, {}}) {
    CommandResult run = RunReptracectl(args);
    EXPECT_EQ(run.exit_code, 2);
    EXPECT_EQ(run.out, "");
    EXPECT_EQ(Lines(run.err).size(), 1u) << run.err;
    EXPECT_TRUE(absl::StartsWith(run.err, "reptracectl: ")) << run.err;
  }
  EXPECT_EQ(RunReptracectl({"trace", "not-hex"}).err,
            "reptracectl: trace: bad id \"not-hex\": expected 1 to 16 hex digits, not all zero"
            " (see 'reptracectl --help')\n");
}

}  // namespace
}  // namespace reptrace
