// The hook is invisible: real programs do exactly the same with and without it.
//
// Each scenario runs twice, plain and then under the hook (LD_PRELOAD, reporting to a real
// reptrace-agent and reptrace-controller on a fresh PostgreSQL database, so the whole
// pipeline is busy), and the two runs must give the same exit codes, the same standard
// output and error, and the same files. Where a program's own output is not deterministic
// (redis-benchmark's speeds) only its deterministic part is compared. Every scenario also
// checks the plain run against what the program should have done, so two equally broken
// runs cannot pass, and checks that the hooked run was really traced (its spans reached
// the controller), so a hook that silently did nothing cannot pass either.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "tests/integration/stack.h"
#include "tests/testing/test_database.h"

namespace reptrace::testing {
namespace {

using nlohmann::json;

enum class Mode { kPlain, kHooked };

const char* ModeName(Mode mode) { return mode == Mode::kPlain ? "plain" : "hooked"; }

// What one run of a scenario did: named steps (a command's exit code and output) and the
// files it left behind (path relative to the scenario's directory -> content).
struct Observed {
  std::deque<std::pair<std::string, CommandResult>> steps;  // Add's references stay valid
  std::map<std::string, std::string> files;

  const CommandResult& Add(const std::string& name, CommandResult result) {
    steps.emplace_back(name, std::move(result));
    return steps.back().second;
  }
  const CommandResult* Find(const std::string& name) const {
    for (const auto& [step, result] : steps) {
      if (step == name) return &result;
    }
    return nullptr;
  }
};

// "" when equal; otherwise where the two first differ, with a little context (binary-safe:
// large outputs are never dumped whole into a failure message).
std::string FirstDifference(const std::string& a, const std::string& b) {
  if (a == b) return "";
  size_t i = 0;
  while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
  auto context = [i](const std::string& s) {
    const size_t from = i > 40 ? i - 40 : 0;
    std::string out = s.substr(from, 120);
    for (char& c : out) {
      if (static_cast<unsigned char>(c) < 0x20 && c != '\n') c = '.';
    }
    return out;
  };
  return absl::StrCat("sizes ", a.size(), " vs ", b.size(), ", first difference at byte ", i,
                      "\n  plain:  [", context(a), "]\n  hooked: [", context(b), "]");
}

// Every regular file under `root`, by path relative to it.
std::map<std::string, std::string> ReadTree(const std::string& root) {
  std::map<std::string, std::string> files;
  std::error_code error;
  for (auto it = std::filesystem::recursive_directory_iterator(root, error);
       !error && it != std::filesystem::recursive_directory_iterator(); it.increment(error)) {
    if (it->is_regular_file()) {
      files[std::filesystem::relative(it->path(), root).string()] = ReadFile(it->path());
    }
  }
  return files;
}

// Deterministic bytes (all 256 values, newlines and NULs included).
std::string Bytes(size_t size, uint32_t seed) {
  std::string out(size, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < size; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    out[i] = static_cast<char>(x >> 7);
  }
  return out;
}

void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream(path, std::ios::binary) << content;
}

void ExpectSameBehaviour(const Observed& plain, const Observed& hooked) {
  ASSERT_EQ(plain.steps.size(), hooked.steps.size());
  for (size_t i = 0; i < plain.steps.size(); ++i) {
    const auto& [name, p] = plain.steps[i];
    const CommandResult& h = hooked.steps[i].second;
    ASSERT_EQ(name, hooked.steps[i].first);
    EXPECT_FALSE(p.timed_out) << name << " (plain) timed out";
    EXPECT_FALSE(h.timed_out) << name << " (hooked) timed out";
    EXPECT_EQ(p.exit_code, h.exit_code) << name << ": exit codes differ; hooked stderr:\n"
                                        << h.err.substr(0, 2000);
    EXPECT_EQ(FirstDifference(p.out, h.out), "") << name << ": stdout differs";
    EXPECT_EQ(FirstDifference(p.err, h.err), "") << name << ": stderr differs";
  }
  std::vector<std::string> plain_names, hooked_names;
  for (const auto& [path, unused] : plain.files) plain_names.push_back(path);
  for (const auto& [path, unused] : hooked.files) hooked_names.push_back(path);
  EXPECT_EQ(absl::StrJoin(plain_names, " "), absl::StrJoin(hooked_names, " "))
      << "the runs left different files";
  for (const auto& [path, content] : plain.files) {
    auto it = hooked.files.find(path);
    if (it != hooked.files.end()) {
      EXPECT_EQ(FirstDifference(content, it->second), "") << "file " << path << " differs";
    }
  }
}

class InvisibilityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    stack_ = new Stack();
    stack_ok_ = stack_->StartController() && stack_->StartAgent();
  }
  static void TearDownTestSuite() {
    delete stack_;
    stack_ = nullptr;
  }

  void SetUp() override {
    ASSERT_TRUE(stack_ok_) << "the reptrace stack did not start";
    dir_ = MakeTempDir("reptrace-invis");
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << "---- reptrace stack logs ----\n" << stack_->Logs();
    RemoveTree(dir_);
  }

  // The environment of a run: under the hook (as `service`) or certainly not.
  static ProcessOptions Options(Mode mode, const std::string& service) {
    ProcessOptions options;
    if (mode == Mode::kHooked) {
      options.env = stack_->HookEnv(service);
    } else {
      options.unset_env = {"LD_PRELOAD", "REPTRACE_SOCKET", "REPTRACE_SERVICE"};
    }
    return options;
  }

  CommandResult Run(Mode mode, const std::string& service, const std::vector<std::string>& argv,
                    ProcessOptions options = {}) {
    ProcessOptions mode_options = Options(mode, service);
    options.env.insert(mode_options.env.begin(), mode_options.env.end());
    options.unset_env = mode_options.unset_env;
    return RunCommand(argv, options, absl::Seconds(60));
  }

  // A long-running program (a server), its output in files under the scenario directory.
  Process Start(Mode mode, const std::string& service, const std::vector<std::string>& argv,
                const std::string& log_name, const std::string& cwd = "") {
    ProcessOptions options = Options(mode, service);
    options.stdout_path = absl::StrCat(dir_, "/", ModeName(mode), ".", log_name, ".out");
    options.stderr_path = absl::StrCat(dir_, "/", ModeName(mode), ".", log_name, ".err");
    options.cwd = cwd;
    return Process(argv, options);
  }

  std::string LogPath(Mode mode, const std::string& log_name, const std::string& stream) {
    return absl::StrCat(dir_, "/", ModeName(mode), ".", log_name, ".", stream);
  }

  // A fresh directory for one run's files.
  std::string RunDir(Mode mode, const std::string& name) {
    const std::string path = absl::StrCat(dir_, "/", name, ".", ModeName(mode));
    mkdir(path.c_str(), 0755);
    return path;
  }

  // The hooked run was traced: spans of `service` reached the controller. Returns how many
  // traces hold one (up to `limit`).
  size_t ExpectTraced(const std::string& service, size_t at_least = 1, int limit = 1000) {
    json traces = json::array();
    WaitUntil(
        [&] {
          traces = stack_->Traces(service, limit);
          return traces.size() >= at_least;
        },
        absl::Seconds(15), absl::Milliseconds(200));
    EXPECT_GE(traces.size(), at_least) << "too few traces with a span of " << service << ": "
                                       << traces.dump(1).substr(0, 6000);
    return traces.size();
  }

  // Runs the scenario without and with the hook, expects the same behaviour both times,
  // and expects the hooked run traced: at least `at_least` traces for each service.
  void ExpectInvisibleAndTraced(
      const std::function<Observed(Mode)>& run,
      const std::vector<std::pair<std::string, size_t>>& traced) {
    const Observed plain = run(Mode::kPlain);
    const Observed hooked = run(Mode::kHooked);
    ExpectSameBehaviour(plain, hooked);
    for (const auto& [service, at_least] : traced) ExpectTraced(service, at_least);
  }

  void CheckDaemon(const std::string& how, const std::string& service);

  static Stack* stack_;
  static bool stack_ok_;
  std::string dir_;
};

Stack* InvisibilityTest::stack_ = nullptr;
bool InvisibilityTest::stack_ok_ = false;

// ---- curl against nginx (HTTP) ----------------------------------------------------------

TEST_F(InvisibilityTest, CurlAgainstNginx) {
  const std::string www = dir_ + "/www";
  mkdir(www.c_str(), 0755);
  const std::string big = Bytes(3 << 20, 1);
  WriteFile(www + "/index.html", "<h1>hello from nginx</h1>\n");
  WriteFile(www + "/big.bin", big);
  WriteFile(www + "/small.txt", "small\n");

  auto run = [&](Mode mode) {
    Observed seen;
    const int port = FreePort();
    const std::string prefix = RunDir(mode, "nginx");
    WriteFile(prefix + "/nginx.conf",
              absl::StrCat("worker_processes 1;\ndaemon off;\npid ", prefix,
                           "/nginx.pid;\nerror_log ", prefix,
                           "/error.log warn;\nevents { worker_connections 64; }\nhttp {\n"
                           "  access_log off;\n  client_body_temp_path ",
                           prefix, "/body;\n  proxy_temp_path ", prefix,
                           "/proxy;\n  fastcgi_temp_path ", prefix,
                           "/fastcgi;\n  uwsgi_temp_path ", prefix, "/uwsgi;\n  scgi_temp_path ",
                           prefix, "/scgi;\n  sendfile on;\n  server {\n    listen 127.0.0.1:", port,
                           ";\n    root ", www, ";\n  }\n}\n"));
    Process nginx = Start(mode, "invis-nginx",
                          {"nginx", "-p", prefix, "-c", prefix + "/nginx.conf"}, "nginx");
    if (!WaitForPort(port, absl::Seconds(20))) {
      ADD_FAILURE() << ModeName(mode) << " nginx did not start: "
                    << ReadFile(prefix + "/error.log");
      return seen;
    }
    const std::string base = absl::StrCat("http://127.0.0.1:", port);
    const std::string out = RunDir(mode, "curl-out");
    const std::vector<std::string> curl = {"curl", "-sS", "--max-time", "20"};
    auto with = [&](std::vector<std::string> args) {
      std::vector<std::string> argv = curl;
      argv.insert(argv.end(), args.begin(), args.end());
      return argv;
    };
    seen.Add("index", Run(mode, "invis-curl", with({base + "/index.html"})));
    // Three files on one keep-alive connection, written to files; a 404; a HEAD.
    seen.Add("three files",
             Run(mode, "invis-curl",
                 with({"-w", "%{http_code} %{size_download} %{num_connects}\\n", "-o",
                       out + "/big.bin", base + "/big.bin", "-o", out + "/small.txt",
                       base + "/small.txt", "-o", out + "/index.html", base + "/index.html"})));
    seen.Add("missing", Run(mode, "invis-curl",
                            with({"--fail", "-o", "/dev/null", "-w", "%{http_code}\\n",
                                  base + "/missing"})));
    seen.Add("head", Run(mode, "invis-curl",
                         with({"-I", "-o", "/dev/null", "-w", "%{http_code} %{content_type}\\n",
                               base + "/small.txt"})));
    nginx.Stop();
    seen.files = ReadTree(out);
    // What curl should have done, in either mode.
    EXPECT_EQ(seen.steps[0].second.out, "<h1>hello from nginx</h1>\n") << ModeName(mode);
    EXPECT_EQ(seen.steps[1].second.out,
              absl::StrCat("200 ", big.size(), " 1\n200 6 0\n200 26 0\n"))
        << ModeName(mode);
    EXPECT_EQ(seen.steps[2].second.exit_code, 22) << ModeName(mode);
    EXPECT_EQ(seen.steps[3].second.out, "200 text/plain\n") << ModeName(mode);
    EXPECT_TRUE(seen.files["big.bin"] == big) << ModeName(mode);
    return seen;
  };
  ExpectInvisibleAndTraced(run, {{"invis-curl", 4}, {"invis-nginx", 4}});
}

// ---- redis-server, redis-cli, redis-benchmark ------------------------------------------

TEST_F(InvisibilityTest, RedisServerCliAndBenchmark) {
  const std::string big = Bytes(1 << 20, 2);
  const std::string big_path = dir_ + "/big.value";
  WriteFile(big_path, big);

  auto run = [&](Mode mode) {
    Observed seen;
    const int port = FreePort();
    const std::string data = RunDir(mode, "redis-data");
    Process server = Start(mode, "invis-redis-server",
                           {"redis-server", "--port", std::to_string(port), "--bind",
                            "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", data},
                           "redis-server");
    if (!WaitForPort(port, absl::Seconds(20))) {
      ADD_FAILURE() << ModeName(mode) << " redis-server did not start: "
                    << ReadFile(LogPath(mode, "redis-server", "out"));
      return seen;
    }
    auto cli = [&](const std::string& name, std::vector<std::string> args,
                   const std::string& stdin_path = "/dev/null") {
      std::vector<std::string> argv = {"redis-cli", "-p", std::to_string(port)};
      argv.insert(argv.end(), args.begin(), args.end());
      ProcessOptions options;
      options.stdin_path = stdin_path;
      return seen.Add(name, Run(mode, "invis-redis-cli", argv, options));
    };
    cli("SET", {"SET", "greeting", "hello world"});
    cli("GET", {"GET", "greeting"});
    for (int i = 0; i < 3; ++i) cli(absl::StrCat("INCR ", i), {"INCR", "counter"});
    cli("RPUSH", {"RPUSH", "list", "alpha", "beta", "gamma", "delta"});
    cli("LRANGE", {"LRANGE", "list", "0", "-1"});
    cli("LRANGE missing", {"LRANGE", "nolist", "0", "-1"});
    cli("MSET", {"MSET", "a", "1", "b", "2", "c", "3"});
    cli("MGET", {"MGET", "a", "b", "c", "nokey"});
    cli("unknown command", {"NOSUCHCOMMAND", "x"});
    cli("wrong type", {"INCR", "list"});
    cli("SET big", {"-x", "SET", "big"}, big_path);  // the value is the whole of stdin
    const CommandResult& get_big = cli("GET big", {"GET", "big"});
    EXPECT_TRUE(get_big.out == big + "\n")
        << ModeName(mode) << " GET big: " << FirstDifference(big + "\n", get_big.out);
    cli("STRLEN big", {"STRLEN", "big"});

    // redis-benchmark's speeds are its own business: compare which tests completed.
    CommandResult bench = Run(mode, "invis-redis-benchmark",
                              {"redis-benchmark", "-q", "-n", "2000", "-t", "get,set", "-p",
                               std::to_string(port)});
    std::string completed;
    for (absl::string_view line : absl::StrSplit(bench.out, absl::ByAnyChar("\r\n"))) {
      if (line.find("requests per second") != absl::string_view::npos) {
        absl::StrAppend(&completed, line.substr(0, line.find(':')), "\n");
      }
    }
    EXPECT_EQ(completed, "SET\nGET\n") << ModeName(mode) << ": " << bench.out;
    bench.out = completed;
    seen.Add("redis-benchmark", std::move(bench));
    cli("DBSIZE", {"DBSIZE"});
    cli("GET benchmark key", {"GET", "key:__rand_int__"});
    cli("SHUTDOWN", {"SHUTDOWN", "NOSAVE"});
    CommandResult server_exit;
    server_exit.exit_code = server.Wait(absl::Seconds(10)).value_or(-1);
    seen.Add("redis-server exit", server_exit);
    seen.files = ReadTree(data);

    EXPECT_EQ(seen.Find("GET")->out, "hello world\n") << ModeName(mode);
    EXPECT_EQ(seen.Find("INCR 2")->out, "3\n") << ModeName(mode);
    EXPECT_EQ(seen.Find("LRANGE")->out, "alpha\nbeta\ngamma\ndelta\n") << ModeName(mode);
    EXPECT_EQ(seen.Find("MGET")->out, "1\n2\n3\n\n") << ModeName(mode);
    EXPECT_EQ(seen.Find("STRLEN big")->out, "1048576\n") << ModeName(mode);
    EXPECT_EQ(seen.Find("DBSIZE")->out, "8\n") << ModeName(mode);
    EXPECT_EQ(server_exit.exit_code, 0) << ModeName(mode);
    return seen;
  };
  ExpectInvisibleAndTraced(run, {{"invis-redis-cli", 10},
                                 {"invis-redis-server", 10},
                                 {"invis-redis-benchmark", 100}});
}

// ---- python3 http.server and urllib ------------------------------------------------------

TEST_F(InvisibilityTest, PythonHttpServerAndUrllib) {
  const std::string www = dir_ + "/www";
  mkdir(www.c_str(), 0755);
  std::vector<std::string> names;
  for (int i = 0; i < 6; ++i) {
    const std::string name = absl::StrCat("file", i, ".bin");
    WriteFile(www + "/" + name, Bytes(static_cast<size_t>(1) << (4 * i % 23), 10 + i));
    names.push_back(name);
  }
  names.push_back("missing.bin");

  auto run = [&](Mode mode) {
    Observed seen;
    const int port = FreePort();
    Process server = Start(mode, "invis-py-server",
                           {"/usr/bin/python3", "-m", "http.server", "--bind", "127.0.0.1",
                            std::to_string(port)},
                           "http.server", www);
    if (!WaitForPort(port, absl::Seconds(20))) {
      ADD_FAILURE() << ModeName(mode) << " http.server did not start";
      return seen;
    }
    const std::string out = RunDir(mode, "urllib-out");
    std::vector<std::string> argv = {"/usr/bin/python3", REPTRACE_URLLIB_CLIENT,
                                     absl::StrCat("http://127.0.0.1:", port), out};
    argv.insert(argv.end(), names.begin(), names.end());
    const CommandResult& client = seen.Add("urllib client", Run(mode, "invis-py-client", argv));
    CommandResult server_exit;
    server_exit.exit_code = server.Stop();
    seen.Add("http.server exit", server_exit);
    seen.files = ReadTree(out);

    EXPECT_EQ(client.exit_code, 0) << ModeName(mode) << client.err;
    EXPECT_NE(client.out.find("missing.bin 404"), std::string::npos) << client.out;
    EXPECT_NE(client.out.find("POST 501"), std::string::npos) << client.out;
    for (int i = 0; i < 6; ++i) {
      const std::string name = names[static_cast<size_t>(i)];
      EXPECT_TRUE(seen.files[name] == ReadFile(www + "/" + name)) << ModeName(mode) << name;
    }
    return seen;
  };
  ExpectInvisibleAndTraced(run, {{"invis-py-client", 9}, {"invis-py-server", 9}});
}

// ---- psql against PostgreSQL ------------------------------------------------------------

TEST_F(InvisibilityTest, PsqlAgainstPostgres) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  auto run = [&](Mode mode) {
    Observed seen;
    const std::string out = RunDir(mode, "psql-out");
    const std::string script = absl::StrCat(out, "/../", ModeName(mode), ".script.sql");
    WriteFile(script, absl::StrCat(
                          "SELECT 1 + 1 AS two;\n"
                          "SELECT n, md5(n::text) FROM generate_series(1, 200) AS n;\n"
                          "CREATE TEMP TABLE t (id int PRIMARY KEY, body text);\n"
                          "INSERT INTO t SELECT n, repeat('y', n * 100) "
                          "FROM generate_series(1, 300) AS n;\n"
                          "SELECT count(*), sum(length(body)), "
                          "md5(string_agg(body, ',' ORDER BY id)) FROM t;\n"
                          "SELECT length(repeat('ab', 200000)) AS len, repeat('ab', 20000) AS big;\n"
                          "\\copy (SELECT n, md5(n::text) FROM generate_series(1, 5000) AS n) TO '",
                          out, "/copy.csv' WITH CSV\n"
                          "\\o ", out, "/query.txt\n"
                          "SELECT string_agg(n::text, ' ') FROM generate_series(1, 1000) AS n;\n"
                          "\\o\n"
                          "SELECT 'done' AS status;\n"));
    const std::vector<std::string> psql = {"psql", "-X", "-v", "ON_ERROR_STOP=1", "-d",
                                           db.conninfo()};
    auto with = [&](std::vector<std::string> args) {
      std::vector<std::string> argv = psql;
      argv.insert(argv.end(), args.begin(), args.end());
      return argv;
    };
    seen.Add("script", Run(mode, "invis-psql", with({"-f", script})));
    seen.Add("error", Run(mode, "invis-psql", with({"-c", "SELECT * FROM no_such_table"})));
    seen.Add("unaligned", Run(mode, "invis-psql",
                              with({"-A", "-t", "-c", "SELECT sum(n) FROM generate_series(1, "
                                                      "100000) AS n"})));
    seen.files = ReadTree(out);

    EXPECT_EQ(seen.steps[0].second.exit_code, 0) << ModeName(mode) << seen.steps[0].second.err;
    EXPECT_NE(seen.steps[0].second.out.find("300 | 4515000 | 77c27e8f8858cbad4483af0e10878889"), std::string::npos)
        << seen.steps[0].second.out.substr(0, 3000);
    EXPECT_NE(seen.steps[1].second.exit_code, 0) << ModeName(mode);
    EXPECT_EQ(seen.steps[2].second.out, "5000050000\n") << ModeName(mode);
    EXPECT_EQ(std::count(seen.files["copy.csv"].begin(), seen.files["copy.csv"].end(), '\n'),
              5000)
        << ModeName(mode);
    return seen;
  };
  ExpectInvisibleAndTraced(run, {{"invis-psql", 3}});
}

// ---- a program that forks and execs -----------------------------------------------------

TEST_F(InvisibilityTest, ForkAndExec) {
  const std::string www = dir_ + "/www";
  mkdir(www.c_str(), 0755);
  WriteFile(www + "/hello.txt", "hello from the server\n");
  // The server is not under test: plain in both runs.
  const int port = FreePort();
  Process server = Start(Mode::kPlain, "",
                         {"/usr/bin/python3", "-m", "http.server", "--bind", "127.0.0.1",
                          std::to_string(port)},
                         "http.server", www);
  ASSERT_TRUE(WaitForPort(port, absl::Seconds(20)));
  const std::string url = absl::StrCat("http://127.0.0.1:", port, "/hello.txt");

  auto run = [&](Mode mode) {
    Observed seen;
    seen.Add("fork_exec", Run(mode, "invis-fork-exec", {REPTRACE_FORK_EXEC, url}));
    return seen;
  };
  Observed plain = run(Mode::kPlain);
  Observed hooked = run(Mode::kHooked);
  EXPECT_EQ(plain.steps[0].second.exit_code, 0) << plain.steps[0].second.err;
  // The fds ls inherited depend on what the test itself inherited (a shell may leak some):
  // the same with and without the hook is what matters, and ExpectSameBehaviour checks it.
  std::string out = plain.steps[0].second.out;
  const size_t ls_from = out.find("echo exited 0\n");
  const size_t ls_to = out.find("ls /proc/self/fd exited 0\n");
  ASSERT_TRUE(ls_from != std::string::npos && ls_to != std::string::npos && ls_from < ls_to)
      << out;
  const std::string listing = out.substr(ls_from + 14, ls_to - ls_from - 14);
  EXPECT_EQ(listing.substr(0, 4), "0\n1\n") << listing;
  out.replace(ls_from + 14, ls_to - ls_from - 14, "<listing>\n");
  EXPECT_EQ(out,
            "parent starts\n"
            "hello from the exec'ed child\n"
            "echo exited 0\n"
            "<listing>\n"
            "ls /proc/self/fd exited 0\n"
            "hello from the server\n"
            "curl exited 0\n"
            "forked child fetched 22 bytes: hello from the server\n"
            "forked child exited 0\n"
            "spawned by posix_spawnp\n"
            "posix_spawnp exited 0\n"
            "parent fetched 22 bytes: hello from the server\n"
            "parent ends with 0 failures\n");
  ExpectSameBehaviour(plain, hooked);
  // The parent's own fetch, the exec'ed curl's and the forked child's: three client spans,
  // each its own trace. The forked child calls _exit() right after its fetch: what the hook
  // queued must not die with it.
  ExpectTraced("invis-fork-exec", 3);
}

// ---- a daemon that closes all its fds ---------------------------------------------------

// `how`: "close" (close() on 0..1023) or "close_range".
void InvisibilityTest::CheckDaemon(const std::string& how, const std::string& service) {
  // The echo server is not under test: plain in both runs.
  const int port = FreePort();
  Process server =
      Start(Mode::kPlain, "", {REPTRACE_EPOLL_ECHO_SERVER, std::to_string(port)}, "echo");
  ASSERT_TRUE(WaitForPort(port, absl::Seconds(20)));

  std::string expected = "first exchange ok\nconnect ok\n";
  for (int i = 0; i < 20; ++i) absl::StrAppend(&expected, "exchange ", i, " ok\n");
  absl::StrAppend(&expected, "daemon done\n");

  auto run = [&](Mode mode) {
    Observed seen;
    const std::string out = RunDir(mode, "daemon");
    seen.Add("fd_closing_daemon",
             Run(mode, service, {REPTRACE_FD_CLOSING_DAEMON, out, std::to_string(port), how}));
    // The grandchild goes on alone; it renames its file when it is done.
    EXPECT_TRUE(WaitUntil([&] { return access((out + "/daemon.done").c_str(), F_OK) == 0; },
                          absl::Seconds(20)))
        << ModeName(mode) << " daemon did not finish; it wrote: "
        << ReadFile(out + "/daemon.out");
    seen.files = ReadTree(out);
    // Exactly the daemon's own lines: not a byte of anybody else's.
    EXPECT_EQ(FirstDifference(expected, seen.files["daemon.done"]), "") << ModeName(mode);
    for (int i = 0; i < 4; ++i) {
      EXPECT_EQ(seen.files[absl::StrCat("aux", i)], absl::StrCat("aux file ", i, "\n"))
          << ModeName(mode);
    }
    return seen;
  };
  Observed plain = run(Mode::kPlain);
  Observed hooked = run(Mode::kHooked);
  EXPECT_EQ(plain.steps[0].second.out, "daemon starting\nfirst child exited 0\n");
  ExpectSameBehaviour(plain, hooked);
  // Both the exchange before the fds were closed and the 20 after it were traced (each its
  // own trace): the hook noticed its fd was gone, reconnected, and lost nothing meanwhile.
  ExpectTraced(service, 21);
}

TEST_F(InvisibilityTest, DaemonThatClosesAllFdsOneByOne) {
  CheckDaemon("close", "invis-daemon-close");
}

TEST_F(InvisibilityTest, DaemonThatClosesAllFdsWithCloseRange) {
  CheckDaemon("close_range", "invis-daemon-close-range");
}

// ---- a multithreaded client against a non-blocking epoll server ------------------------

TEST_F(InvisibilityTest, ThreadedClientAgainstEpollServer) {
  auto run = [&](Mode mode) {
    Observed seen;
    const int port = FreePort();
    Process server = Start(mode, "invis-epoll-server",
                           {REPTRACE_EPOLL_ECHO_SERVER, std::to_string(port)}, "epoll");
    if (!WaitForPort(port, absl::Seconds(20))) {
      ADD_FAILURE() << ModeName(mode) << " epoll server did not start";
      return seen;
    }
    seen.Add("threaded_echo_client",
             Run(mode, "invis-threaded-client",
                 {REPTRACE_THREADED_ECHO_CLIENT, std::to_string(port), "8", "50"}));
    CommandResult server_result;
    server_result.exit_code = server.Stop();
    server_result.out = ReadFile(LogPath(mode, "epoll", "out"));
    seen.Add("epoll_echo_server", server_result);
    std::cerr << ModeName(mode) << " epoll server: " << ReadFile(LogPath(mode, "epoll", "err"));
    return seen;
  };
  Observed plain = run(Mode::kPlain);
  Observed hooked = run(Mode::kHooked);
  ASSERT_EQ(plain.steps.size(), 2u);
  const CommandResult& client = plain.steps[0].second;
  EXPECT_EQ(client.exit_code, 0) << client.err;
  EXPECT_EQ(client.out.substr(0, client.out.find(" bytes")), "threads 8 requests 400 ok 400 bad 0");
  // The WaitForPort probe was the first connection; then the client's 8.
  const std::string bytes = client.out.substr(client.out.rfind(' ') + 1);
  EXPECT_EQ(plain.steps[1].second.out,
            absl::StrCat("accepted 9 bytes_in ", bytes.substr(0, bytes.size() - 1),
                         " bytes_out ", bytes.substr(0, bytes.size() - 1),
                         " open_at_exit 0\n"));
  EXPECT_EQ(plain.steps[1].second.exit_code, 0);
  ExpectSameBehaviour(plain, hooked);
  // One client span per request/response.
  ExpectTraced("invis-threaded-client", 400);
  ExpectTraced("invis-epoll-server", 1);
}

}  // namespace
}  // namespace reptrace::testing
