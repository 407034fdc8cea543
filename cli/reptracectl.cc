// reptracectl: the admin CLI of reptrace. See cli/command_line.cc for its usage.
// Exit status: 0 success, 1 controller unreachable / RPC error / trace not found,
// 2 usage error (also a bad config key, value or file). Every error is one line on stderr, "reptracectl: ...".
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <optional>
#include <string>
#include <vector>

#include <grpc/support/log.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "cli/command_line.h"
#include "cli/config_document.h"
#include "cli/controller_client.h"
#include "cli/json_output.h"
#include "cli/text_output.h"
#include "cli/waterfall.h"
#include "common/ids.h"

namespace reptrace {
namespace cli {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

std::optional<std::string> GetEnv(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr) return std::nullopt;
  return std::string(value);
}

void PrintError(const std::string& message) {
  std::cerr << "reptracectl: " << message << std::endl;
}

// One line for a failed call to the controller.
int ReportRpcError(const CommandLine& line, absl::string_view method, const absl::Status& status) {
  if (status.code() == absl::StatusCode::kUnavailable ||
      status.code() == absl::StatusCode::kDeadlineExceeded) {
    PrintError(absl::StrCat("cannot reach controller at ", line.controller, ": ",
                            status.message()));
  } else {
    PrintError(absl::StrCat("controller at ", line.controller, " failed ", method, ": ",
                            absl::StatusCodeToString(status.code()), ": ", status.message()));
  }
  return kExitFailure;
}

void PrintJson(const nlohmann::json& document) { std::cout << document.dump(2) << "\n"; }
void PrintJson(const nlohmann::ordered_json& document) {
  std::cout << document.dump(2) << "\n";
}

// "$USER@hostname" ($LOGNAME if USER is unset; "unknown" for what cannot be found).
std::string DefaultAuthor() {
  std::optional<std::string> user = GetEnv("USER");
  if (!user.has_value() || user->empty()) user = GetEnv("LOGNAME");
  if (!user.has_value() || user->empty()) user = "unknown";
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0') {
    std::strcpy(host, "unknown");
  }
  return absl::StrCat(*user, "@", host);
}

// The whole of `path`, or of stdin for "-".
absl::StatusOr<std::string> ReadConfigFile(const std::string& path) {
  std::ostringstream text;
  if (path == "-") {
    text << std::cin.rdbuf();
    if (std::cin.bad()) return absl::InvalidArgumentError("cannot read stdin");
    return text.str();
  }
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    return absl::InvalidArgumentError(absl::StrCat("cannot read ", path, ": ",
                                                   std::strerror(errno)));
  }
  text << file.rdbuf();
  if (file.bad()) return absl::InvalidArgumentError(absl::StrCat("cannot read ", path));
  return text.str();
}

// config set: the document to send and the version it replaces, then SetConfig.
int SetConfig(const CommandLine& line, ControllerClient& client) {
  v1::SetConfigRequest request;
  request.set_author(line.author.empty() ? DefaultAuthor() : line.author);
  if (!line.config_file.empty()) {
    absl::StatusOr<std::string> text = ReadConfigFile(line.config_file);
    if (!text.ok()) {
      PrintError(std::string(text.status().message()));
      return kExitUsage;
    }
    absl::StatusOr<v1::TraceConfig> config = ParseConfigDocument(*text);
    if (!config.ok()) {
      PrintError(absl::StrCat(line.config_file, ": ", config.status().message()));
      return kExitUsage;
    }
    *request.mutable_config() = *std::move(config);
    if (line.expected_version.has_value()) {
      request.set_expected_version(*line.expected_version);
    } else {
      absl::StatusOr<v1::ConfigVersion> current = client.GetConfig();
      if (!current.ok()) return ReportRpcError(line, "GetConfig", current.status());
      request.set_expected_version(current->version());
    }
  } else {
    // Keys and values are checked before the controller is asked anything.
    absl::StatusOr<v1::TraceConfig> checked =
        ApplyAssignments(v1::TraceConfig(), line.assignments);
    if (!checked.ok()) {
      PrintError(std::string(checked.status().message()));
      return kExitUsage;
    }
    absl::StatusOr<v1::ConfigVersion> current = client.GetConfig();
    if (!current.ok()) return ReportRpcError(line, "GetConfig", current.status());
    absl::StatusOr<v1::TraceConfig> config = ApplyAssignments(current->config(), line.assignments);
    if (!config.ok()) {
      PrintError(std::string(config.status().message()));
      return kExitUsage;
    }
    *request.mutable_config() = *std::move(config);
    request.set_expected_version(current->version());
  }

  absl::StatusOr<v1::ConfigVersion> set = client.SetConfig(request);
  if (set.status().code() == absl::StatusCode::kFailedPrecondition) {
    PrintError(absl::StrCat("the config is no longer at version ", request.expected_version(),
                            ": someone else changed it meanwhile (controller: ",
                            set.status().message(),
                            "); nothing was set: check 'reptracectl config get' and retry"));
    return kExitFailure;
  }
  if (set.status().code() == absl::StatusCode::kInvalidArgument) {
    PrintError(absl::StrCat("the controller refused the config: ", set.status().message()));
    return kExitFailure;
  }
  if (!set.ok()) return ReportRpcError(line, "SetConfig", set.status());
  if (line.json) {
    PrintJson(ConfigVersionToJson(*set));
  } else {
    std::cout << "config version " << set->version() << " set (was "
              << request.expected_version() << ")\n";
  }
  return kExitOk;
}

int Run(const CommandLine& line) {
  const Charset charset = ChooseCharset(line.ascii, isatty(STDOUT_FILENO) == 1, GetEnv);
  const absl::TimeZone local = absl::LocalTimeZone();
  ControllerClient client(line.controller, line.timeout);

  switch (line.command) {
    case Command::kHelp:
      std::cout << (line.help_topic.has_value() ? CommandUsage(*line.help_topic)
                                                : ProgramUsage());
      return kExitOk;

    case Command::kTraces: {
      v1::ListTracesRequest request;
      request.set_service(line.service);
      request.set_limit(line.limit);
      absl::StatusOr<v1::ListTracesResponse> response = client.ListTraces(request);
      if (!response.ok()) return ReportRpcError(line, "ListTraces", response.status());
      if (line.json) {
        PrintJson(TraceListToJson(*response));
      } else {
        std::cout << FormatTraceList(*response, local, charset);
      }
      return kExitOk;
    }

    case Command::kTrace: {
      absl::StatusOr<v1::Trace> trace = client.GetTrace(line.trace_id);
      if (trace.status().code() == absl::StatusCode::kNotFound) {
        PrintError(absl::StrCat("trace ", FormatId(line.trace_id), " not found"));
        return kExitFailure;
      }
      if (!trace.ok()) return ReportRpcError(line, "GetTrace", trace.status());
      if (line.json) {
        PrintJson(TraceToJson(*trace));
      } else {
        WaterfallOptions options;
        options.width = line.width;
        options.charset = charset;
        options.time_zone = local;
        std::cout << RenderWaterfall(*trace, options);
      }
      return kExitOk;
    }

    case Command::kAgents: {
      absl::StatusOr<v1::ListAgentsResponse> response = client.ListAgents();
      if (!response.ok()) return ReportRpcError(line, "ListAgents", response.status());
      if (line.json) {
        PrintJson(AgentListToJson(*response));
      } else {
        std::cout << FormatAgentList(*response, local);
      }
      return kExitOk;
    }

    case Command::kStats: {
      absl::StatusOr<v1::GetStatsResponse> response = client.GetStats();
      if (!response.ok()) return ReportRpcError(line, "GetStats", response.status());
      if (line.json) {
        PrintJson(StatsToJson(*response));
      } else {
        std::cout << FormatStats(*response);
      }
      return kExitOk;
    }

    case Command::kConfigGet: {
      absl::StatusOr<v1::ConfigVersion> version = client.GetConfig();
      if (!version.ok()) return ReportRpcError(line, "GetConfig", version.status());
      if (line.json) {
        PrintJson(ConfigVersionToJson(*version));
      } else {
        std::cout << FormatConfigVersion(*version, local);
      }
      return kExitOk;
    }

    case Command::kConfigSet:
      return SetConfig(line, client);

    case Command::kConfigHistory: {
      absl::StatusOr<v1::ListConfigHistoryResponse> response =
          client.ListConfigHistory(line.limit);
      if (!response.ok()) return ReportRpcError(line, "ListConfigHistory", response.status());
      if (line.json) {
        PrintJson(ConfigHistoryToJson(*response));
      } else {
        std::cout << FormatConfigHistory(*response, local);
      }
      return kExitOk;
    }
  }
  return kExitFailure;
}

}  // namespace
}  // namespace cli
}  // namespace reptrace

int main(int argc, char** argv) {
  using namespace reptrace::cli;  // NOLINT: main only
  // gRPC's own log lines would break the "one line on stderr" promise; our errors say
  // what failed.
  gpr_set_log_function([](gpr_log_func_args*) {});

  std::vector<std::string> args(argv + 1, argv + argc);
  absl::StatusOr<CommandLine> line = ParseCommandLine(args, GetEnv("REPTRACE_CONTROLLER"));
  if (!line.ok()) {
    PrintError(absl::StrCat(line.status().message(), " (see 'reptracectl --help')"));
    return kExitUsage;
  }
  int code = Run(*line);
  std::cout.flush();
  if (!std::cout) {
    PrintError("cannot write to stdout");
    return kExitFailure;
  }
  return code;
}
