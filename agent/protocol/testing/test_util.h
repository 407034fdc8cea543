// Helpers for the protocol parsers' tests.
#ifndef REPTRACE_AGENT_PROTOCOL_TESTING_TEST_UTIL_H_
#define REPTRACE_AGENT_PROTOCOL_TESTING_TEST_UTIL_H_

#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "agent/protocol/protocol.h"

namespace reptrace {
namespace protocol {
namespace testing {

// Attributes as (key, value) pairs, for gmock's ElementsAre(Pair(...)).
inline std::vector<std::pair<std::string, std::string>> Pairs(
    const Attributes& attributes) {
  std::vector<std::pair<std::string, std::string>> pairs;
  for (const Attribute& a : attributes) {
    pairs.emplace_back(std::string(a.key), std::string(a.value.view()));
  }
  return pairs;
}

// Calls fn(prefix_length, prefix) for every prefix of `bytes`, the empty one and `bytes`
// itself included, each in a heap block of exactly its size (so a sanitizer sees overreads,
// which std::string's inline buffer would hide).
template <typename Fn>
void ForEachPrefix(absl::string_view bytes, Fn fn) {
  for (size_t n = 0; n <= bytes.size(); ++n) {
    std::unique_ptr<char[]> copy(new char[n == 0 ? 1 : n]);
    if (n > 0) std::memcpy(copy.get(), bytes.data(), n);
    fn(n, absl::string_view(copy.get(), n));
  }
}

}  // namespace testing
}  // namespace protocol
}  // namespace reptrace

#endif  // REPTRACE_AGENT_PROTOCOL_TESTING_TEST_UTIL_H_
