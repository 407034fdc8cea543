#include "common/flags_usage.h"

#include <string>

#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/version.h"

namespace reptrace {
namespace {

bool IsOurFlagFile(absl::string_view file) { return !absl::StrContains(file, "absl/"); }

}  // namespace

void ConfigureFlagsUsage(absl::string_view usage) {
  absl::SetProgramUsageMessage(usage);
  absl::FlagsUsageConfig config;
  config.contains_helpshort_flags = IsOurFlagFile;
  config.contains_help_flags = IsOurFlagFile;
  config.version_string = [] { return absl::StrCat("reptrace ", kVersion, "\n"); };
  absl::SetFlagsUsageConfig(config);
}

}  // namespace reptrace
