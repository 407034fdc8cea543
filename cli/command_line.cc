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

Queries a reptrace controller (gRPC service reptrace.v1.QueryService) and reads or
changes its trace config (reptrace.v1.ConfigService).

Commands:
  traces    list recent traces, newest first
  trace ID  show one trace as a terminal waterfall
  agents    list the agents known to the controller
  stats     per agent: events, spans and drops by reason; cluster-wide: trace
            sampling's decisions
  config get | config set KEY=VALUE... | config set -f FILE | config history
            show, change, or list the versions of the trace config
            (gRPC service reptrace.v1.ConfigService)
  help [COMMAND]
            show this help, or the help of COMMAND (also: COMMAND --help)

Global flags (before COMMAND):
  --controller HOST:PORT  controller address; default $REPTRACE_CONTROLLER,
                          else 127.0.0.1:7070
  --timeout SECONDS       deadline of each call to the controller (default 10)
  -h, --help              show this help

Every command takes --json for machine-readable output.
Exit status: 0 success, 1 controller unreachable, RPC error (a config refused or
changed meanwhile) or trace not found, 2 usage error (also: a bad config key, value
or file).
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

constexpr char kStatsUsage[] =
    R"(usage: reptracectl [GLOBAL FLAGS] stats [--json]

Shows two tables.

Agents, one row per agent the controller knows: node, agent id, connected or not,
events received from hooked processes, spans built and spans stored (by the
controllers, before sampling), then what was dropped, by reason:
  HOOK DROPS     events dropped inside hooked processes (ring full, no agent)
  RATE LIMITED   events the hooks did not make (config max_events_per_second)
  MALFORMED      records the agent could not decode
  NO CONNECTION  records of a connection the agent never saw opened
  SPAN DROPS     spans the agent dropped (its buffer was full)
  REJECTED       invalid spans the controller dropped
The agent counts are as the agent last reported them, since it started.

Sampling, added up over every controller replica since the database was made: traces
and spans kept because a span failed (keep_errors), because the trace was slow
(keep_slower_than_ms), by probability, and dropped by probability (deleted), and the
traces stored but still waiting for their decision. Only traces stored while sampling
is on (sampling.probability below 1) are decided and counted.

Flags:
  --json   print {"agents":[{"agent_id","node","connected","events_received",
           "spans_built","spans_stored","drops":{"hook_events_dropped",
           "hook_events_rate_limited","records_malformed","events_without_connection",
           "spans_dropped","spans_rejected"}}],
           "sampling":{"kept":{"error":{"traces","spans"},"slow":{...},
           "probability":{...}},"dropped":{"probability":{...}},"traces_pending"}}
)";

constexpr char kConfigUsage[] =
    R"(usage: reptracectl [GLOBAL FLAGS] config get [--json]
       reptracectl [GLOBAL FLAGS] config set [--author A] [--json] KEY=VALUE...
       reptracectl [GLOBAL FLAGS] config set [--author A] [--json]
                                             [--expected-version N] -f FILE
       reptracectl [GLOBAL FLAGS] config history [--limit N] [--json]

The trace config (reptrace.v1.TraceConfig) is one document, kept by the controller
with its history and pushed to every agent; each change makes a new version.

config get
  Shows the current version: its number, author, time (local) and the document,
  YAML-like. --json prints {"version","author","created_ns","config":{...}}, the
  config in protobuf's JSON mapping with proto field names and every primitive and
  list field present (64-bit integers are strings there).

config set KEY=VALUE...
  Reads the current version, applies the assignments in order, and sends the result
  as a change of that version. KEY is a field path: enabled, capture_bytes,
  trace_unix_sockets, max_events_per_second, sampling.probability,
  sampling.keep_errors, sampling.keep_slower_than_ms. VALUE is true/false or a
  number; a list field (filters, inband_ports) takes the whole list as JSON, and
  sampling a whole JSON object, e.g.
    inband_ports='[{"first":6379}]'
    filters='[{"action":"ACTION_EXCLUDE","peer_ports":[{"first":5432}]}]'
  An unknown key or a value that does not fit is an error (exit 2) and nothing is
  sent.

config set -f FILE
  Sends the whole document in FILE ("-" = stdin): JSON if it starts with '{', else
  YAML, with the field names above (in YAML, quote a string that would read as a
  number or true/false). Fields left out take their defaults (false, 0, empty).
  It replaces the version read just before, or version N with --expected-version N.
  A file that cannot be read or parsed, or an unknown field, is an error (exit 2)
  and nothing is sent.

  If the config changed since the version read (someone else set it), the controller
  refuses the change: nothing is set; look at the new version and run the command
  again (exit 1). A document the controller finds invalid is refused with its
  reason (exit 1).
  Prints the new version's number (--json: the new version as config get --json).

config history
  Lists versions newest first: VERSION, AUTHOR, TIME, ENABLED, SAMPLING (the
  probability) and FILTERS (how many).

Flags:
  --author A              author recorded with the change (default $USER@hostname)
  -f, --file FILE         the document to send
  --expected-version N    with -f: the version the change replaces
  --limit N               history: at most N versions, 1 to 1000 (default: the
                          controller's, 20)
  --json                  machine-readable output; history prints {"versions":[...]}
)";

absl::Status UsageError(absl::string_view message) {
  return absl::InvalidArgumentError(message);
}

std::optional<Command> CommandByName(absl::string_view name) {
  if (name == "traces") return Command::kTraces;
  if (name == "trace") return Command::kTrace;
  if (name == "agents") return Command::kAgents;
  if (name == "stats") return Command::kStats;
  if (name == "config") return Command::kConfigGet;  // as a help topic: all of config
  if (name == "help") return Command::kHelp;
  return std::nullopt;
}

absl::string_view CommandName(Command command) {
  switch (command) {
    case Command::kTraces: return "traces";
    case Command::kTrace: return "trace";
    case Command::kAgents: return "agents";
    case Command::kStats: return "stats";
    case Command::kConfigGet: return "config get";
    case Command::kConfigSet: return "config set";
    case Command::kConfigHistory: return "config history";
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
    case Command::kStats: return kStatsUsage;
    case Command::kConfigGet:
    case Command::kConfigSet:
    case Command::kConfigHistory: return kConfigUsage;
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
  if (command_name == "config") {
    if (cursor.Done()) return UsageError("config: expected get, set or history");
    const std::string& action = cursor.Peek();
    if (action == "get") {
      line.command = Command::kConfigGet;
    } else if (action == "set") {
      line.command = Command::kConfigSet;
    } else if (action == "history") {
      line.command = Command::kConfigHistory;
    } else if (action != "-h" && action != "--help") {  // --help is read below
      return UsageError(
          absl::StrCat("config: unknown action \"", action, "\" (expected get, set or history)"));
    }
    if (!IsFlag(action)) cursor.Next();
  }
  const bool config_command = line.command == Command::kConfigGet ||
                              line.command == Command::kConfigSet ||
                              line.command == Command::kConfigHistory;

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
    } else if (name == "--ascii" && !config_command && line.command != Command::kStats) {
      line.ascii = true;
    } else if (name == "--service" && line.command == Command::kTraces) {
      ASSIGN_OR_RETURN(line.service, cursor.Value(name, inline_value));
    } else if (name == "--limit" && (line.command == Command::kTraces ||
                                     line.command == Command::kConfigHistory)) {
      ASSIGN_OR_RETURN(std::string text, cursor.Value(name, inline_value));
      ASSIGN_OR_RETURN(line.limit, ParseIntInRange(name, text, 1, 1000));
    } else if ((name == "-f" || name == "--file") && line.command == Command::kConfigSet) {
      ASSIGN_OR_RETURN(line.config_file, cursor.Value(name, inline_value));
      if (line.config_file.empty()) return UsageError(absl::StrCat("flag ", name, " needs a file"));
    } else if (name == "--author" && line.command == Command::kConfigSet) {
      ASSIGN_OR_RETURN(line.author, cursor.Value(name, inline_value));
    } else if (name == "--expected-version" && line.command == Command::kConfigSet) {
      ASSIGN_OR_RETURN(std::string text, cursor.Value(name, inline_value));
      uint64_t version = 0;
      if (!absl::SimpleAtoi(text, &version) || version == 0) {
        return UsageError(absl::StrFormat(
            "bad value \"%s\" for --expected-version: expected a version number (1 or more)",
            text));
      }
      line.expected_version = version;
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
  } else if (line.command == Command::kConfigSet) {
    for (const std::string& assignment : positional) {
      if (assignment.find('=') == std::string::npos || assignment[0] == '=') {
        return UsageError(absl::StrCat("config set: expected KEY=VALUE, got \"", assignment,
                                       "\""));
      }
    }
    line.assignments = std::move(positional);
    if (line.config_file.empty() == line.assignments.empty()) {
      return UsageError("config set: give either KEY=VALUE assignments or -f FILE");
    }
    if (line.expected_version.has_value() && line.config_file.empty()) {
      return UsageError(
          "config set: --expected-version goes with -f FILE (KEY=VALUE edits the version it "
          "reads)");
    }
  } else if (!positional.empty()) {
    return UsageError(absl::StrCat(CommandName(line.command), ": unexpected argument \"",
                                   positional[0], "\""));
  }
  return line;
}

}  // namespace cli
}  // namespace reptrace
