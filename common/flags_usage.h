// --help for reptrace's binaries. absl's default --help lists only flags defined in a file
// named after the program, which ours (main.cc) are not, so it would say "No flags
// matched"; this makes --help list every flag of ours (and none of Abseil's own) and
// --version print the reptrace version.
#ifndef REPTRACE_COMMON_FLAGS_USAGE_H_
#define REPTRACE_COMMON_FLAGS_USAGE_H_

#include "absl/strings/string_view.h"

namespace reptrace {

// Call once from main, before absl::ParseCommandLine.
void ConfigureFlagsUsage(absl::string_view usage);

}  // namespace reptrace

#endif  // REPTRACE_COMMON_FLAGS_USAGE_H_
