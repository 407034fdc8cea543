#include "agent/protocol/internal/text.h"

namespace reptrace {
namespace protocol {
namespace internal {
namespace {

constexpr absl::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Length of the valid UTF-8 sequence at text[i] (1..4), 0 if invalid, -1 if `text` ends
// inside what is so far a valid sequence.
int Utf8SequenceLength(absl::string_view text, size_t i) {
  const uint8_t lead = static_cast<uint8_t>(text[i]);
  if (lead < 0x80) return 1;
  int length;
  uint8_t low = 0x80, high = 0xBF;  // the range of the second byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) low = 0xA0;   // overlong
    if (lead == 0xED) high = 0x9F;  // surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) low = 0x90;   // overlong
    if (lead == 0xF4) high = 0x8F;  // above U+10FFFF
  } else {
    return 0;
  }
  for (int k = 1; k < length; ++k) {
    if (i + k >= text.size()) return -1;
    const uint8_t c = static_cast<uint8_t>(text[i + k]);
    if (k == 1 ? (c < low || c > high) : (c < 0x80 || c > 0xBF)) return 0;
  }
  return length;
}

bool IsControl(uint8_t c) { return c < 0x20 || c == 0x7F; }

}  // namespace

std::string AsciiUpper(absl::string_view s) {
  std::string out(s);
  for (char& c : out) c = ToAsciiUpper(c);
  return out;
}

std::string CleanText(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const int length = Utf8SequenceLength(text, i);
    if (length < 0) break;
    if (length == 0) {
      out.append(kReplacement.data(), kReplacement.size());
      ++i;
    } else if (length == 1) {
      out.push_back(IsControl(static_cast<uint8_t>(text[i])) ? ' ' : text[i]);
      ++i;
    } else {
      out.append(text.data() + i, length);
      i += length;
    }
  }
  return out;
}

bool IsCleanText(absl::string_view text) {
  for (size_t i = 0; i < text.size();) {
    const int length = Utf8SequenceLength(text, i);
    if (length <= 0) return false;
    if (length == 1 && IsControl(static_cast<uint8_t>(text[i]))) return false;
    i += length;
  }
  return true;
}

}  // namespace internal
}  // namespace protocol
}  // namespace reptrace
