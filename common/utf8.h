// Text that came from a traced program (a service name, an HTTP path) goes into protobuf
// `string` fields, which must be valid UTF-8: a message with one bad byte fails to parse
// as a whole at the controller. Bookworm's Abseil has no UTF-8 validator, hence this.
#ifndef REPTRACE_COMMON_UTF8_H_
#define REPTRACE_COMMON_UTF8_H_

#include <string>

#include "absl/strings/string_view.h"

namespace reptrace {

// `text` with every byte that is not part of a well-formed UTF-8 sequence (RFC 3629: no
// overlong forms, no surrogates, nothing above U+10FFFF) replaced by U+FFFD.
std::string ToValidUtf8(absl::string_view text);

}  // namespace reptrace

#endif  // REPTRACE_COMMON_UTF8_H_
