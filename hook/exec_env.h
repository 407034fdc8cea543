// ExecEnvironment: what an exec'd program needs in its environment to keep the hook.
//
// The library constructor captures, once, the LD_PRELOAD value it was started with (plus
// libreptrace.so itself if that value did not name it) and every REPTRACE_* variable. The
// exec wrappers then ask WithHookEnvironment() for the environment to pass: the program's
// own, with whatever of those is missing added back, the program's own values kept, and
// libreptrace.so appended to an LD_PRELOAD that does not name it (once), and the causal
// context (REPTRACE_CAUSE) of the thread calling exec. Everything is
// built in a caller-provided fixed-size buffer (on the stack: no malloc, safe in a vfork
// child); if it does not fit, the program's environment is passed unchanged.
#ifndef REPTRACE_HOOK_EXEC_ENV_H_
#define REPTRACE_HOOK_EXEC_ENV_H_

#include <cstddef>
#include <cstdint>

namespace reptrace::hook {

struct EnvScratch {
  static constexpr size_t kMaxEntries = 512;
  static constexpr size_t kStringBytes = 4096;
  char* entries[kMaxEntries];
  char strings[kStringBytes];
};

// From the library constructor (or a test): `environ` as the process started, and the
// path libreptrace.so was loaded from (nullptr if unknown).
void CaptureHookEnvironment(char* const* environ, const char* self_path);

// The environment to exec with: `envp` itself when nothing is missing or the result does
// not fit in `scratch`, else an array inside `scratch`. `envp` may be null (empty).
// `cause` (PackCause, 0 for none) goes in REPTRACE_CAUSE="pid:tid", replacing any
// REPTRACE_CAUSE in `envp`: the causal parent of the new program's main thread.
char* const* WithHookEnvironment(char* const* envp, EnvScratch* scratch, uint64_t cause);

// From the library constructor: the REPTRACE_CAUSE this program was exec'd with (0 if none
// or malformed), removed from the environment so the program never sees it.
uint64_t TakeCauseFromEnvironment();

}  // namespace reptrace::hook

#endif  // REPTRACE_HOOK_EXEC_ENV_H_
