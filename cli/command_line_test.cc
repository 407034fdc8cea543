#include "cli/command_line.h"

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace reptrace {
namespace cli {
namespace {

absl::StatusOr<CommandLine> Parse(std::vector<std::string> args,
                                  std::optional<std::string> env = std::nullopt) {
  return ParseCommandLine(args, env);
}

// The message of a refused command line, "" if it was accepted.
std::string Error(std::vector<std::string> args) {
  absl::StatusOr<CommandLine> line = Parse(args);
  if (line.ok()) return "";
  EXPECT_EQ(line.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(absl::StrContains(line.status().message(), "\n"));
  return std::string(line.status().message());
}

TEST(CommandLineTest, GlobalFlagsComeBeforeTheCommand) {
  absl::StatusOr<CommandLine> line =
      Parse({"--controller", "ctl:9000", "--timeout=2.5", "traces", "--limit", "5",
             "--service=nginx", "--json"});
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_EQ(line->controller, "ctl:9000");
  EXPECT_EQ(line->timeout, absl::Milliseconds(2500));
  EXPECT_EQ(line->command, Command::kTraces);
  EXPECT_EQ(line->limit, 5);
  EXPECT_EQ(line->service, "nginx");
  EXPECT_TRUE(line->json);
  EXPECT_FALSE(line->ascii);
}

TEST(CommandLineTest, ControllerDefaultsToEnvThenBuiltIn) {
  absl::StatusOr<CommandLine> line = Parse({"agents"});
  ASSERT_TRUE(line.ok());
  EXPECT_EQ(line->controller, "127.0.0.1:7070");
  EXPECT_EQ(line->timeout, absl::Seconds(10));

  line = Parse({"agents"}, "ctl.example:7070");
  ASSERT_TRUE(line.ok());
  EXPECT_EQ(line->controller, "ctl.example:7070");

  line = Parse({"agents"}, "");  // set but empty: the built-in default
  ASSERT_TRUE(line.ok());
  EXPECT_EQ(line->controller, "127.0.0.1:7070");

  line = Parse({"--controller=flag:1", "agents"}, "env:2");
  ASSERT_TRUE(line.ok());
  EXPECT_EQ(line->controller, "flag:1");
}

TEST(CommandLineTest, TraceTakesOneHexId) {
  absl::StatusOr<CommandLine> line =
      Parse({"trace", "00AB00cd00ef0012", "--ascii", "--width", "60"});
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_EQ(line->command, Command::kTrace);
  EXPECT_EQ(line->trace_id, 0x00ab00cd00ef0012ULL);
  EXPECT_TRUE(line->ascii);
  EXPECT_EQ(line->width, 60);
  EXPECT_EQ(Parse({"trace", "--json", "ff"})->trace_id, 0xffu);
}

TEST(CommandLineTest, BadTraceIdsAreRefused) {
  EXPECT_TRUE(absl::StrContains(Error({"trace", "xyz"}), "bad id \"xyz\""));
  EXPECT_TRUE(absl::StrContains(Error({"trace", "0"}), "bad id"));
  EXPECT_TRUE(absl::StrContains(Error({"trace", "12345678901234567"}), "bad id"));
  EXPECT_EQ(Error({"trace"}), "trace: missing trace ID");
  EXPECT_EQ(Error({"trace", "1", "2"}), "trace: expected one trace ID");
}

TEST(CommandLineTest, BadFlagsAndCommandsAreRefused) {
  EXPECT_EQ(Error({}), "no command given");
  EXPECT_EQ(Error({"frobnicate"}), "unknown command \"frobnicate\"");
  EXPECT_EQ(Error({"--verbose", "traces"}),
            "unknown flag --verbose (global flags go before the command)");
  EXPECT_EQ(Error({"traces", "--verbose"}), "unknown flag --verbose for command traces");
  EXPECT_EQ(Error({"agents", "--limit", "3"}), "unknown flag --limit for command agents");
  EXPECT_EQ(Error({"traces", "--controller", "x:1"}),
            "flag --controller is global: put it before the command");
  EXPECT_EQ(Error({"traces", "--limit"}), "flag --limit needs a value");
  EXPECT_TRUE(absl::StrContains(Error({"traces", "--limit", "0"}), "from 1 to 1000"));
  EXPECT_TRUE(absl::StrContains(Error({"traces", "--limit", "ten"}), "bad value \"ten\""));
  EXPECT_EQ(Error({"traces", "--json=yes"}), "flag --json takes no value");
  EXPECT_TRUE(absl::StrContains(Error({"--timeout", "0", "traces"}), "--timeout"));
  EXPECT_TRUE(absl::StrContains(Error({"--timeout", "soon", "traces"}), "--timeout"));
  EXPECT_TRUE(absl::StrContains(Error({"--controller", "nohostport", "traces"}), "HOST:PORT"));
  EXPECT_EQ(Error({"agents", "extra"}), "agents: unexpected argument \"extra\"");
  EXPECT_TRUE(absl::StrContains(Error({"trace", "1", "--width", "5"}), "from 10 to 400"));
}

TEST(CommandLineTest, BadControllerFromEnvIsRefused) {
  absl::StatusOr<CommandLine> line = Parse({"agents"}, "nohostport");
  ASSERT_FALSE(line.ok());
  EXPECT_TRUE(absl::StrContains(line.status().message(), "$REPTRACE_CONTROLLER"));
}

TEST(CommandLineTest, HelpForms) {
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"help"}, {"--help"}, {"-h"}, {"--help", "traces"}}) {
    absl::StatusOr<CommandLine> line = Parse(args);
    ASSERT_TRUE(line.ok()) << args[0];
    EXPECT_EQ(line->command, Command::kHelp);
    EXPECT_FALSE(line->help_topic.has_value()) << args[0];
  }
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"help", "trace"}, {"trace", "--help"}, {"trace", "not-an-id", "-h"}}) {
    absl::StatusOr<CommandLine> line = Parse(args);
    ASSERT_TRUE(line.ok()) << args[0];
    EXPECT_EQ(line->command, Command::kHelp);
    EXPECT_EQ(line->help_topic, Command::kTrace);
  }
  EXPECT_EQ(Error({"help", "nope"}), "help: unknown command \"nope\"");
}

TEST(CommandLineTest, UsageTextsNameEveryFlagTheParserAccepts) {
  const std::string program = ProgramUsage();
  for (const char* word : {"--controller", "--timeout", "REPTRACE_CONTROLLER", "127.0.0.1:7070",
                           "traces", "trace ID", "agents", "--json", "help"}) {
    EXPECT_TRUE(absl::StrContains(program, word)) << word;
  }
  for (const char* word : {"--service", "--limit", "--json", "--ascii"}) {
    EXPECT_TRUE(absl::StrContains(CommandUsage(Command::kTraces), word)) << word;
  }
  for (const char* word : {"--json", "--ascii", "--width", "parent_span_id is \"\""}) {
    EXPECT_TRUE(absl::StrContains(CommandUsage(Command::kTrace), word)) << word;
  }
  for (const char* word : {"--json", "--ascii"}) {
    EXPECT_TRUE(absl::StrContains(CommandUsage(Command::kAgents), word)) << word;
  }
  EXPECT_TRUE(absl::StrContains(program, "stats")) << program;
  for (const char* word : {"--json", "RATE LIMITED", "REJECTED", "traces_pending", "pending",
                           "keep_errors", "keep_slower_than_ms", "every controller replica"}) {
    EXPECT_TRUE(absl::StrContains(CommandUsage(Command::kStats), word)) << word;
  }
}

TEST(CommandLineTest, StatsTakesJsonAndNothingElse) {
  absl::StatusOr<CommandLine> line = Parse({"stats"});
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_EQ(line->command, Command::kStats);
  EXPECT_FALSE(line->json);
  line = Parse({"stats", "--json"});
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_TRUE(line->json);
  line = Parse({"stats", "--help"});
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_EQ(line->command, Command::kHelp);
  EXPECT_EQ(line->help_topic, Command::kStats);
  EXPECT_EQ(Error({"stats", "--ascii"}), "unknown flag --ascii for command stats");
  EXPECT_EQ(Error({"stats", "--limit", "3"}), "unknown flag --limit for command stats");
  EXPECT_EQ(Error({"stats", "extra"}), "stats: unexpected argument \"extra\"");
}

TEST(CommandLineTest, ConfigSetTakesAssignmentsInOrder) {
  absl::StatusOr<CommandLine> line =
      Parse({"config", "set", "enabled=false", "--author", "alice@a",
             R"(inband_ports=[{"first":6379}])", "--json"});
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_EQ(line->command, Command::kConfigSet);
  EXPECT_EQ(line->assignments,
            std::vector<std::string>({"enabled=false", R"(inband_ports=[{"first":6379}])"}));
  EXPECT_EQ(line->author, "alice@a");
  EXPECT_TRUE(line->json);
  EXPECT_FALSE(line->expected_version.has_value());
}

TEST(CommandLineTest, ConfigSetTakesAFileAndAnExpectedVersion) {
  absl::StatusOr<CommandLine> line =
      Parse({"config", "set", "-f", "trace.yaml", "--expected-version=7"});
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_EQ(line->config_file, "trace.yaml");
  EXPECT_EQ(line->expected_version, 7u);
  EXPECT_TRUE(line->assignments.empty());
}

TEST(CommandLineTest, ConfigGetAndHistory) {
  absl::StatusOr<CommandLine> line = Parse({"config", "get", "--json"});
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_EQ(line->command, Command::kConfigGet);
  EXPECT_TRUE(line->json);
  line = Parse({"config", "history", "--limit", "3"});
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_EQ(line->command, Command::kConfigHistory);
  EXPECT_EQ(line->limit, 3);
}

TEST(CommandLineTest, ConfigHelpShowsTheConfigUsage) {
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"config", "--help"}, {"config", "set", "-h"}, {"help", "config"}}) {
    absl::StatusOr<CommandLine> line = Parse(args);
    ASSERT_TRUE(line.ok()) << line.status();
    EXPECT_EQ(line->command, Command::kHelp);
    ASSERT_TRUE(line->help_topic.has_value());
    EXPECT_TRUE(absl::StartsWith(CommandUsage(*line->help_topic),
                                 "usage: reptracectl [GLOBAL FLAGS] config get"));
  }
}

TEST(CommandLineTest, ConfigUsageErrors) {
  EXPECT_EQ(Error({"config"}), "config: expected get, set or history");
  EXPECT_EQ(Error({"config", "put"}),
            "config: unknown action \"put\" (expected get, set or history)");
  EXPECT_EQ(Error({"config", "set"}), "config set: give either KEY=VALUE assignments or -f FILE");
  EXPECT_EQ(Error({"config", "set", "a=1", "-f", "x"}),
            "config set: give either KEY=VALUE assignments or -f FILE");
  EXPECT_EQ(Error({"config", "set", "enabled"}), "config set: expected KEY=VALUE, got \"enabled\"");
  EXPECT_EQ(Error({"config", "set", "a=1", "--expected-version", "3"}),
            "config set: --expected-version goes with -f FILE (KEY=VALUE edits the version it "
            "reads)");
  EXPECT_EQ(Error({"config", "set", "-f", "x", "--expected-version", "0"}),
            "bad value \"0\" for --expected-version: expected a version number (1 or more)");
  EXPECT_EQ(Error({"config", "get", "--ascii"}), "unknown flag --ascii for command config get");
  EXPECT_EQ(Error({"config", "get", "x"}), "config get: unexpected argument \"x\"");
  EXPECT_EQ(Error({"agents", "--author", "a"}), "unknown flag --author for command agents");
}

}  // namespace
}  // namespace cli
}  // namespace reptrace
