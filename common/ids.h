// Span and trace ids: 64-bit, never 0, shown as 16 lower-case hex digits everywhere
// (CLI, JSON, logs), stored as BIGINT (the same bits, signed) in PostgreSQL.
#ifndef REPTRACE_COMMON_IDS_H_
#define REPTRACE_COMMON_IDS_H_

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace reptrace {

std::string FormatId(uint64_t id);
// The same 16 digits into `out`, without allocating (for strings a span views).
void FormatIdTo(uint64_t id, char (&out)[16]);
// Accepts 1 to 16 hex digits, either case; refuses anything else and 0.
absl::StatusOr<uint64_t> ParseId(absl::string_view text);
// A random non-zero id from a per-thread generator seeded from the OS.
uint64_t NewRandomId();

}  // namespace reptrace

#endif  // REPTRACE_COMMON_IDS_H_
