#include "cli/command_line.h"

#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/ids.h"
#include "common/status_macros.h"

namespace reptrace {
namespace cli {
namespace {

constexpr char kGlobalUsage[] =
    R"(usage: reptracectl [--controller HOST:PORT] [--timeout SECONDS] COMMAND [FLAGS] [ARGS]

Queries a reptrace controller (gRPC service reptrace.v1.QueryService).

Commands:
  traces    list recent traces, newest first
  trace ID  show one trace as a terminal waterfall
  agents    list the agents known to the controller
  help [COMMAND]
            show this help, or the help of COMMAND (also: COMMAND --help)

Global flags (before COMMAND):
  --controller HOST:PORT  controller address; default $REPTRACE_CONTROLLER,
                          else 127.0.0.1:7070
  --timeout SECONDS       deadline of each call to the controller (default 10)
  -h, --help              show this help

Every read command takes --json for machine-readable output.
Exit status: 0 success, 1 controller unreachable, RPC error or trace not found,
2 usage error.
)";

constexpr char kTracesUsage[] =
    R"(usage: reptracectl [GLOBAL FLAGS] traces [--service S] [--limit N] [--json] [--ascii]

Lists recent traces, newest first: trace id, start time (local), duration, span
count, root service, root name, status (ok/error/unset) and the services involved.

Flags:
  --service S  only traces with a span of service S
  --limit N    at most N traces, 1 to 1000 (default: the controller's, 20)
  --json       print {"traces":[{"trace_id","start_ns","duration_ns","span_count",
               "root_service","root_name","status","services"}]}
  --ascii      no non-ASCII characters (durations in "us")
)";

constexpr char kTraceUsage[] =
    R"(usage: reptracectl [GLOBAL FLAGS] trace ID [--json] [--ascii] [--width N]

Shows one trace as a waterfall: one row per span, children under their parent
(siblings by start time), indented by depth, with a bar on a timeline spanning the
whole trace, then service, kind, name, duration, and ERROR for failed spans. A span
whose parent is not in the trace is shown at depth 0, marked "[parent ID missing]".

ID is a trace id, or the id of any span of the trace: 1 to 16 hex digits.

Flags:
  --json     print {"trace_id", "spans":[{"span_id","parent_span_id","service","node",
             "pid","kind","name","peer","start_ns","duration_ns","status",
             "attributes"}]}: ids are 16-hex-digit strings, parent_span_id is ""
             when the span has no parent, kind is "client"/"server"/"unspecified",
             status "ok"/"error"/"unset", times in ns since the Unix epoch
  --ascii    draw with '#' and ASCII only; the default when stdout is not a UTF-8
             terminal or NO_COLOR is set
  --width N  timeline width in columns, 10 to 400 (default 40)
)";

constexpr char kAgentsUsage[] =
    R"(usage: reptracectl [GLOBAL FLAGS] agents [--json] [--ascii]

Lists the agents the controller knows: node, agent id, version, connected or not,
last seen (local time), batches and spans stored, and the agent's drop counters
(events dropped in hooked processes, spans dropped by the agent, malformed records).

Flags:
  --json   print {"agents":[{"agent_id","node","agent_version","hostname","connected",
           "connected_at_ns","last_seen_ns","batches_stored","spans_stored",
           "counters":{...}}]}
  --ascii  no non-ASCII characters
)";

absl::Status UsageError(absl::string_view message) {
  return absl::InvalidArgumentError(message);
}

std::optional<Command> CommandByName(absl::string_view name) {
  if (name == "traces") return Command::kTraces;
  if (name == "trace") return Command::kTrace;
  if (name == "agents") return Command::kAgents;
  if (name == "help") return Command::kHelp;
  return std::nullopt;
}

absl::string_view CommandName(Command command) {
  switch (command) {
    case Command::kTraces: return "traces";
    case Command::kTrace: return "trace";
    case Command::kAgents: return "agents";
    case Command::kHelp: return "help";
  }
  return "?";
}

// Walks the argv, splitting `--flag=value` and fetching the value of `--flag value`.
class ArgCursor {
 public:
  explicit ArgCursor(const std::vector<std::string>& args) : args_(args) {}

  bool Done() const { return index_ >= args_.size(); }
  const std::string& Peek() const { return args_[index_]; }
  const std::string& Next() { return args_[index_++]; }

  // The current argument is a flag: its name (before any '=') and, if inlined, value.
  static void SplitFlag(absl::string_view arg, absl::string_view* name,
                        std::optional<std::string>* inline_value) {
    size_t eq = arg.find('=');
    if (eq == absl::string_view::npos) {
      *name = arg;
      inline_value->reset();
    } else {
      *name = arg.substr(0, eq);
      *inline_value = std::string(arg.substr(eq + 1));
    }
  }

  absl::StatusOr<std::string> Value(absl::string_view name,
                                    const std::optional<std::string>& inline_value) {
    if (inline_value.has_value()) return *inline_value;
    if (Done()) return UsageError(absl::StrCat("flag ", name, " needs a value"));
    return Next();
  }

 private:
  const std::vector<std::string>& args_;
  size_t index_ = 0;
};

bool IsFlag(absl::string_view arg) { return arg.size() > 1 && arg[0] == '-'; }

absl::StatusOr<int> ParseIntInRange(absl::string_view flag, absl::string_view text, int lo,
                                    int hi) {
  int value = 0;
  if (!absl::SimpleAtoi(text, &value) || value < lo || value > hi) {
    return UsageError(absl::StrFormat("bad value \"%s\" for %s: expected an integer from %d to %d",
                                      text, flag, lo, hi));
  }
  return value;
}

absl::StatusOr<absl::Duration> ParseTimeout(absl::string_view text) {
  double seconds = 0;
  if (!absl::SimpleAtod(text, &seconds) || !std::isfinite(seconds) || seconds <= 0 ||
      seconds > 86400) {
    return UsageError(absl::StrFormat(
        "bad value \"%s\" for --timeout: expected a number of seconds above 0", text));
  }
  return absl::Seconds(seconds);
}

absl::Status CheckController(absl::string_view address, absl::string_view origin) {
  if (address.empty() || address.find(':') == absl::string_view::npos) {
    return UsageError(
        absl::StrFormat("bad controller address \"%s\" (%s): expected HOST:PORT", address, origin));
  }
  return absl::OkStatus();
}

}  // namespace

std::string ProgramUsage() { return kGlobalUsage; }

std::string CommandUsage(Command command) {
  switch (command) {
    case Command::kTraces: return kTracesUsage;
    case Command::kTrace: return kTraceUsage;
    case Command::kAgents: return kAgentsUsage;
    case Command::kHelp: return kGlobalUsage;
  }
  return kGlobalUsage;
}

absl::StatusOr<CommandLine> ParseCommandLine(const std::vector<std::string>& args,
                                             std::optional<std::string> env_controller) {
  CommandLine line;
  bool controller_from_env = false;
  if (env_controller.has_value() && !env_controller->empty()) {
    line.controller = *env_controller;
    controller_from_env = true;
  }
  bool controller_from_flag = false;

  ArgCursor cursor(args);
  // Global flags, up to the command.
  while (!cursor.Done() && IsFlag(cursor.Peek())) {
    absl::string_view name;
    std::optional<std::string> inline_value;
    ArgCursor::SplitFlag(cursor.Next(), &name, &inline_value);
    if (name == "-h" || name == "--help") {
      line.command = Command::kHelp;
      return line;
    } else if (name == "--controller") {
      ASSIGN_OR_RETURN(line.controller, cursor.Value(name, inline_value));
      controller_from_flag = true;
    } else if (name == "--timeout") {
      ASSIGN_OR_RETURN(std::string text, cursor.Value(name, inline_value));
      ASSIGN_OR_RETURN(line.timeout, ParseTimeout(text));
    } else {
      return UsageError(absl::StrCat("unknown flag ", name,
                                     " (global flags go before the command)"));
    }
  }
  RETURN_IF_ERROR(CheckController(line.controller, controller_from_flag ? "--controller"
                                                   : controller_from_env
                                                       ? "$REPTRACE_CONTROLLER"
                                                       : "default"));
  if (cursor.Done()) return UsageError("no command given");

  const std::string& command_name = cursor.Next();
  std::optional<Command> command = CommandByName(command_name);
  if (!command.has_value()) {
    return UsageError(absl::StrCat("unknown command \"", command_name, "\""));
  }
  line.command = *command;

  if (line.command == Command::kHelp) {
    if (cursor.Done()) return line;
    const std::string& topic = cursor.Next();
    std::optional<Command> topic_command = CommandByName(topic);
    if (!topic_command.has_value()) {
      return UsageError(absl::StrCat("help: unknown command \"", topic, "\""));
    }
    if (!cursor.Done()) return UsageError("help: too many arguments");
    if (*topic_command != Command::kHelp) line.help_topic = *topic_command;
    return line;
  }

  std::vector<std::string> positional;
  while (!cursor.Done()) {
    const std::string& arg = cursor.Next();
    if (!IsFlag(arg)) {
      positional.push_back(arg);
      continue;
    }
    absl::string_view name;
    std::optional<std::string> inline_value;
    ArgCursor::SplitFlag(arg, &name, &inline_value);
    const bool boolean = name == "-h" || name == "--help" || name == "--json" ||
                         name == "--ascii";
    if (boolean && inline_value.has_value()) {
      return UsageError(absl::StrCat("flag ", name, " takes no value"));
    }
    if (name == "-h" || name == "--help") {
      Command topic = line.command;
      line = CommandLine();
      line.command = Command::kHelp;
      line.help_topic = topic;
      return line;
    } else if (name == "--json") {
      line.json = true;
    } else if (name == "--ascii") {
      line.ascii = true;
    } else if (name == "--service" && line.command == Command::kTraces) {
      ASSIGN_OR_RETURN(line.service, cursor.Value(name, inline_value));
    } else if (name == "--limit" && line.command == Command::kTraces) {
      ASSIGN_OR_RETURN(std::string text, cursor.Value(name, inline_value));
      ASSIGN_OR_RETURN(line.limit, ParseIntInRange(name, text, 1, 1000));
    } else if (name == "--width" && line.command == Command::kTrace) {
      ASSIGN_OR_RETURN(std::string text, cursor.Value(name, inline_value));
      ASSIGN_OR_RETURN(line.width, ParseIntInRange(name, text, 10, 400));
    } else if (name == "--controller" || name == "--timeout") {
      return UsageError(absl::StrCat("flag ", name, " is global: put it before the command"));
    } else {
      return UsageError(absl::StrCat("unknown flag ", name, " for command ",
                                     CommandName(line.command)));
    }
  }

  if (line.command == Command::kTrace) {
    if (positional.empty()) return UsageError("trace: missing trace ID");
    if (positional.size() > 1) return UsageError("trace: expected one trace ID");
    absl::StatusOr<uint64_t> id = ParseId(positional[0]);
    if (!id.ok()) return UsageError(absl::StrCat("trace: ", id.status().message()));
    line.trace_id = *id;
  } else if (!positional.empty()) {
    return UsageError(absl::StrCat(CommandName(line.command), ": unexpected argument \"",
                                   positional[0], "\""));
  }
  return line;
}

}  // namespace cli
}  // namespace reptrace
