// libFuzzer target: the PostgreSQL frontend (request) and backend (response) parsers.
#include <cstddef>
#include <cstdint>

#include "agent/protocol/fuzz/check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view head(reinterpret_cast<const char*>(data), size);
  reptrace::protocol::fuzz::CheckRequest(reptrace::protocol::ParsePostgresqlRequest(head),
                                         reptrace::protocol::Protocol::kPostgresql);
  reptrace::protocol::fuzz::CheckResponse(reptrace::protocol::ParsePostgresqlResponse(head));
  return 0;
}
