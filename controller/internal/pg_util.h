// Small helpers shared by the controller's PostgreSQL code.
#ifndef REPTRACE_CONTROLLER_INTERNAL_PG_UTIL_H_
#define REPTRACE_CONTROLLER_INTERNAL_PG_UTIL_H_

#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace reptrace::controller::internal {

// "{1,-2,3}": a PostgreSQL array literal, passed as a parameter and cast to bigint[].
std::string BigintArrayLiteral(const std::vector<int64_t>& values);

// libpq messages span several lines ("...\n\tIs the server running..."): one line.
std::string OneLine(absl::string_view text);

// UNAVAILABLE with `what` and the exception's message on one line.
absl::Status DatabaseError(absl::string_view what, const std::exception& e);

// The 64 bits of an id as PostgreSQL's signed BIGINT, and back.
inline int64_t ToBigint(uint64_t id) { return static_cast<int64_t>(id); }
inline uint64_t FromBigint(int64_t value) { return static_cast<uint64_t>(value); }

}  // namespace reptrace::controller::internal

#endif  // REPTRACE_CONTROLLER_INTERNAL_PG_UTIL_H_
