#ifndef REPTRACE_COMMON_VERSION_H_
#define REPTRACE_COMMON_VERSION_H_

namespace reptrace {
inline constexpr char kVersion[] = "0.1.0";
}  // namespace reptrace

#endif  // REPTRACE_COMMON_VERSION_H_
