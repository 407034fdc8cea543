#include "common/ids.h"

#include <random>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"

namespace reptrace {

void FormatIdTo(uint64_t id, char (&out)[16]) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (int i = 0; i < 16; ++i) out[i] = kHex[(id >> (60 - 4 * i)) & 0xf];
}

std::string FormatId(uint64_t id) {
  char digits[16];
  FormatIdTo(id, digits);
  return std::string(digits, sizeof(digits));
}

absl::StatusOr<uint64_t> ParseId(absl::string_view text) {
  uint64_t value = 0;
  if (text.empty() || text.size() > 16 ||
      text.find_first_not_of("0123456789abcdefABCDEF") != absl::string_view::npos ||
      !absl::SimpleHexAtoi(text, &value) || value == 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("bad id \"%s\": expected 1 to 16 hex digits, not all zero", text));
  }
  return value;
}

uint64_t NewRandomId() {
  thread_local std::mt19937_64 generator([] {
    std::random_device device;
    return (static_cast<uint64_t>(device()) << 32) ^ device();
  }());
  uint64_t id = 0;
  while (id == 0) id = generator();
  return id;
}

}  // namespace reptrace
