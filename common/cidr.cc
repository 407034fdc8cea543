#include "common/cidr.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace reptrace {

absl::StatusOr<Cidr> ParseCidr(absl::string_view text) {
  const size_t slash = text.find('/');
  if (slash == absl::string_view::npos) return absl::InvalidArgumentError("no /LENGTH");
  const std::string address(text.substr(0, slash));
  const absl::string_view length_text = text.substr(slash + 1);
  unsigned char bytes[16];
  int size = 0;
  if (inet_pton(AF_INET, address.c_str(), bytes) == 1) {
    size = 4;
  } else if (inet_pton(AF_INET6, address.c_str(), bytes) == 1) {
    size = 16;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", address, "\" is not an IPv4 or IPv6 address"));
  }
  int length = 0;
  if (length_text.empty() || length_text.size() > 3 ||
      !std::all_of(length_text.begin(), length_text.end(),
                   [](char c) { return absl::ascii_isdigit(c); }) ||
      !absl::SimpleAtoi(length_text, &length)) {
    return absl::InvalidArgumentError(
        absl::StrCat("prefix length \"", length_text, "\" is not a number"));
  }
  if (length > size * 8) {
    return absl::InvalidArgumentError(absl::StrCat("prefix length ", length, " > ", size * 8));
  }
  for (int bit = length; bit < size * 8; ++bit) {
    if (bytes[bit / 8] & (0x80 >> (bit % 8))) return absl::InvalidArgumentError("host bits set");
  }
  Cidr cidr;
  if (size == 4) {
    cidr.addr[10] = cidr.addr[11] = 0xff;
    std::memcpy(cidr.addr + 12, bytes, 4);
    cidr.prefix = 96 + length;
  } else {
    std::memcpy(cidr.addr, bytes, 16);
    cidr.prefix = length;
  }
  return cidr;
}

}  // namespace reptrace
