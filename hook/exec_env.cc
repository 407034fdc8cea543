#include "hook/exec_env.h"

#include <stdlib.h>

#include <cstdint>
#include <cstring>

namespace reptrace::hook {
namespace {

constexpr char kPreload[] = "LD_PRELOAD=";
constexpr size_t kPreloadLen = sizeof(kPreload) - 1;
constexpr char kPrefix[] = "REPTRACE_";
constexpr size_t kPrefixLen = sizeof(kPrefix) - 1;
constexpr char kCauseVar[] = "REPTRACE_CAUSE";
constexpr char kCause[] = "REPTRACE_CAUSE=";
constexpr size_t kCauseLen = sizeof(kCause) - 1;

// Captured once; read-only afterwards.
char g_self_path[512] = {};
char g_self_base[128] = {};
char g_preload[1024] = {};  // the LD_PRELOAD value to give a program that has none
char g_vars[2048] = {};     // "REPTRACE_A=x\0REPTRACE_B=y\0", then an empty string
bool g_captured = false;

const char* BaseName(const char* path, size_t len, size_t* base_len) {
  size_t start = 0;
  for (size_t i = 0; i < len; ++i) {
    if (path[i] == '/') start = i + 1;
  }
  *base_len = len - start;
  return path + start;
}

// Does an LD_PRELOAD value (space- or colon-separated) name libreptrace.so?
bool NamesUs(const char* value) {
  if (g_self_base[0] == '\0') return false;
  const size_t want = strlen(g_self_base);
  const char* p = value;
  while (*p != '\0') {
    while (*p == ' ' || *p == ':') ++p;
    const char* end = p;
    while (*end != '\0' && *end != ' ' && *end != ':') ++end;
    size_t base_len;
    const char* base = BaseName(p, static_cast<size_t>(end - p), &base_len);
    if (end > p && base_len == want && std::memcmp(base, g_self_base, want) == 0) return true;
    p = end;
  }
  return false;
}

// The length of "NAME=" in `entry`, 0 if it has no '='.
size_t NameLength(const char* entry) {
  const char* eq = std::strchr(entry, '=');
  return eq == nullptr ? 0 : static_cast<size_t>(eq - entry) + 1;
}

bool HasName(char* const* envp, size_t n, const char* entry, size_t name_len) {
  for (size_t i = 0; i < n; ++i) {
    if (std::strncmp(envp[i], entry, name_len) == 0) return true;
  }
  return false;
}

// Appends the concatenation of up to three strings to the string area; nullptr if full.
char* Append(EnvScratch* scratch, size_t* used, const char* a, const char* b, const char* c) {
  const size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
  if (*used + la + lb + lc + 1 > EnvScratch::kStringBytes) return nullptr;
  char* out = scratch->strings + *used;
  std::memcpy(out, a, la);
  std::memcpy(out + la, b, lb);
  std::memcpy(out + la + lb, c, lc);
  out[la + lb + lc] = '\0';
  *used += la + lb + lc + 1;
  return out;
}

// Decimal digits of `value` into `out` (at least 11 bytes), NUL-terminated. By hand: this
// runs between vfork and exec, where snprintf (locale, maybe malloc) has no place.
void FormatDecimal(uint32_t value, char* out) {
  char digits[10];
  int n = 0;
  do {
    digits[n++] = static_cast<char>('0' + value % 10);
    value /= 10;
  } while (value != 0);
  for (int i = 0; i < n; ++i) out[i] = digits[n - 1 - i];
  out[n] = '\0';
}

// Parses a decimal uint32 ending at `end` (or NUL); false unless it is all digits.
bool ParseDecimal(const char* p, char end, uint32_t* value) {
  uint64_t v = 0;
  const char* start = p;
  for (; *p >= '0' && *p <= '9'; ++p) {
    v = v * 10 + static_cast<uint64_t>(*p - '0');
    if (v > UINT32_MAX) return false;
  }
  if (p == start || *p != end) return false;
  *value = static_cast<uint32_t>(v);
  return true;
}

}  // namespace

uint64_t TakeCauseFromEnvironment() {
  const char* value = getenv(kCauseVar);
  if (value == nullptr) return 0;
  uint32_t pid = 0, tid = 0;
  const char* colon = std::strchr(value, ':');
  const bool ok = colon != nullptr && ParseDecimal(value, ':', &pid) &&
                  ParseDecimal(colon + 1, '\0', &tid) && pid != 0 && tid != 0;
  unsetenv(kCauseVar);
  return ok ? (static_cast<uint64_t>(pid) << 32) | tid : 0;
}

void CaptureHookEnvironment(char* const* environ, const char* self_path) {
  g_self_path[0] = g_self_base[0] = g_preload[0] = g_vars[0] = '\0';
  if (self_path != nullptr && strlen(self_path) < sizeof(g_self_path)) {
    std::memcpy(g_self_path, self_path, strlen(self_path) + 1);
    size_t base_len;
    const char* base = BaseName(g_self_path, strlen(g_self_path), &base_len);
    if (base_len < sizeof(g_self_base)) {
      std::memcpy(g_self_base, base, base_len);
      g_self_base[base_len] = '\0';
    }
  }
  size_t vars_used = 0;
  for (size_t i = 0; environ != nullptr && environ[i] != nullptr; ++i) {
    const char* entry = environ[i];
    const size_t len = strlen(entry);
    if (std::strncmp(entry, kPreload, kPreloadLen) == 0) {
      if (len - kPreloadLen < sizeof(g_preload)) {
        std::memcpy(g_preload, entry + kPreloadLen, len - kPreloadLen + 1);
      }
    } else if (std::strncmp(entry, kPrefix, kPrefixLen) == 0 && NameLength(entry) > 0 &&
               std::strncmp(entry, kCause, kCauseLen) != 0 &&  // per exec, not inherited
               vars_used + len + 2 <= sizeof(g_vars)) {
      std::memcpy(g_vars + vars_used, entry, len + 1);
      vars_used += len + 1;
      g_vars[vars_used] = '\0';
    }
  }
  if (!NamesUs(g_preload) && g_self_path[0] != '\0') {
    const size_t have = strlen(g_preload);
    const size_t add = strlen(g_self_path);
    if (have + 1 + add < sizeof(g_preload)) {
      if (have > 0) g_preload[have] = ':';
      std::memcpy(g_preload + (have > 0 ? have + 1 : 0), g_self_path, add + 1);
    }
  }
  g_captured = true;
}

char* const* WithHookEnvironment(char* const* envp, EnvScratch* scratch, uint64_t cause) {
  if (!g_captured) return envp;
  size_t n = 0;
  while (envp != nullptr && envp[n] != nullptr) ++n;
  size_t used = 0;
  size_t count = 0;
  bool changed = false;
  bool has_preload = false;
  // The program's entries, with LD_PRELOAD completed if it does not name us.
  for (size_t i = 0; i < n; ++i) {
    if (count + 1 >= EnvScratch::kMaxEntries) return envp;
    char* entry = envp[i];
    if (std::strncmp(entry, kCause, kCauseLen) == 0) {  // replaced below
      changed = true;
      continue;
    }
    if (std::strncmp(entry, kPreload, kPreloadLen) == 0) {
      has_preload = true;
      if (!NamesUs(entry + kPreloadLen) && g_self_path[0] != '\0') {
        entry = Append(scratch, &used, entry, entry[kPreloadLen] == '\0' ? "" : ":",
                       g_self_path);
        if (entry == nullptr) return envp;
        changed = true;
      }
    }
    scratch->entries[count++] = entry;
  }
  if (!has_preload && g_preload[0] != '\0') {
    if (count + 1 >= EnvScratch::kMaxEntries) return envp;
    char* entry = Append(scratch, &used, kPreload, g_preload, "");
    if (entry == nullptr) return envp;
    scratch->entries[count++] = entry;
    changed = true;
  }
  for (const char* var = g_vars; *var != '\0'; var += strlen(var) + 1) {
    if (HasName(envp, n, var, NameLength(var))) continue;
    if (count + 1 >= EnvScratch::kMaxEntries) return envp;
    scratch->entries[count++] = const_cast<char*>(var);
    changed = true;
  }
  if (cause != 0) {
    char value[24];  // "pid:tid"
    FormatDecimal(static_cast<uint32_t>(cause >> 32), value);
    const size_t pid_len = strlen(value);
    value[pid_len] = ':';
    FormatDecimal(static_cast<uint32_t>(cause), value + pid_len + 1);
    if (count + 1 >= EnvScratch::kMaxEntries) return envp;
    char* entry = Append(scratch, &used, kCause, value, "");
    if (entry == nullptr) return envp;
    scratch->entries[count++] = entry;
    changed = true;
  }
  if (!changed) return envp;
  scratch->entries[count] = nullptr;
  return scratch->entries;
}

}  // namespace reptrace::hook
