// reptracectl: the admin CLI of reptrace. See cli/command_line.cc for its usage.
// Exit status: 0 success, 1 controller unreachable / RPC error / trace not found,
// 2 usage error. Every error is one line on stderr, "reptracectl: ...".
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include <grpc/support/log.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "cli/command_line.h"
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
