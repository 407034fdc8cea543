// reptracectl's command line: `reptracectl [GLOBAL FLAGS] COMMAND [COMMAND FLAGS] [ARGS]`.
//
// The argv is parsed by hand: absl flags know one flat set of flags per program, not
// subcommands each with their own flags, and the whole grammar is small enough to read
// here. Flags take their value as `--flag VALUE` or `--flag=VALUE`; boolean flags take
// none. Parsing is pure (the environment is passed in) so it is tested on its own.
#ifndef REPTRACE_CLI_COMMAND_LINE_H_
#define REPTRACE_CLI_COMMAND_LINE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace reptrace {
namespace cli {

inline constexpr char kDefaultController[] = "127.0.0.1:7070";
inline constexpr absl::Duration kDefaultTimeout = absl::Seconds(10);
inline constexpr int kDefaultWaterfallWidth = 40;

enum class Command {
  kHelp,    // print usage (of `help_topic`, or of the whole program) and exit 0
  kTraces,  // ListTraces
  kTrace,   // GetTrace, shown as a waterfall
  kAgents,  // ListAgents
  kStats,   // GetStats
  kConfigGet,      // ConfigService.GetConfig
  kConfigSet,      // GetConfig (unless --expected-version), then SetConfig
  kConfigHistory,  // ConfigService.ListConfigHistory
};

struct CommandLine {
  // Global flags.
  std::string controller = kDefaultController;
  absl::Duration timeout = kDefaultTimeout;

  Command command = Command::kHelp;
  // For kHelp: the command whose usage is asked for; nullopt = the whole program.
  std::optional<Command> help_topic;

  // Read-command flags.
  bool json = false;
  bool ascii = false;
  // traces
  std::string service;
  int limit = 0;  // traces, config history: 0 = the controller's default (20)
  // trace
  uint64_t trace_id = 0;
  int width = kDefaultWaterfallWidth;
  // config set: either assignments ("KEY=VALUE", in order) or a file.
  std::vector<std::string> assignments;
  std::string config_file;
  std::optional<uint64_t> expected_version;  // only with config_file
  std::string author;                         // "" = $USER@hostname
};

// Parses `args` (argv without argv[0]). `env_controller` is $REPTRACE_CONTROLLER (nullopt
// or empty when unset); it replaces the built-in default, and --controller replaces both.
// Errors are InvalidArgument with a one-line message meant for the user (no program
// name prefix): unknown command or flag, a missing or bad value, a bad trace id.
absl::StatusOr<CommandLine> ParseCommandLine(const std::vector<std::string>& args,
                                             std::optional<std::string> env_controller);

// Usage of the whole program, and of one command; both end with a newline.
std::string ProgramUsage();
std::string CommandUsage(Command command);

}  // namespace cli
}  // namespace reptrace

#endif  // REPTRACE_CLI_COMMAND_LINE_H_
