// Byte-level helpers shared by the protocol parsers. Internal to agent/protocol.
#ifndef REPTRACE_AGENT_PROTOCOL_INTERNAL_TEXT_H_
#define REPTRACE_AGENT_PROTOCOL_INTERNAL_TEXT_H_

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace reptrace {
namespace protocol {
namespace internal {

inline bool IsAsciiUpper(char c) { return c >= 'A' && c <= 'Z'; }
inline bool IsAsciiLower(char c) { return c >= 'a' && c <= 'z'; }
inline bool IsAsciiAlpha(char c) { return IsAsciiUpper(c) || IsAsciiLower(c); }
inline bool IsAsciiDigit(char c) { return c >= '0' && c <= '9'; }
inline char ToAsciiUpper(char c) { return IsAsciiLower(c) ? static_cast<char>(c - 32) : c; }
inline char ToAsciiLower(char c) { return IsAsciiUpper(c) ? static_cast<char>(c + 32) : c; }

std::string AsciiUpper(absl::string_view s);

// `text` made fit for a span: valid UTF-8 sequences are kept, a sequence cut short by the end
// of `text` is dropped (captures end anywhere), any other invalid byte becomes U+FFFD, and
// control characters become spaces.
std::string CleanText(absl::string_view text);

// True if `text` is valid UTF-8 holding no control character (what CleanText returns).
bool IsCleanText(absl::string_view text);

inline uint16_t ReadBe16(absl::string_view s, size_t at) {
  return static_cast<uint16_t>((static_cast<uint8_t>(s[at]) << 8) | static_cast<uint8_t>(s[at + 1]));
}
inline uint32_t ReadBe32(absl::string_view s, size_t at) {
  return (uint32_t{static_cast<uint8_t>(s[at])} << 24) |
         (uint32_t{static_cast<uint8_t>(s[at + 1])} << 16) |
         (uint32_t{static_cast<uint8_t>(s[at + 2])} << 8) | uint32_t{static_cast<uint8_t>(s[at + 3])};
}

}  // namespace internal
}  // namespace protocol
}  // namespace reptrace

#endif  // REPTRACE_AGENT_PROTOCOL_INTERNAL_TEXT_H_
