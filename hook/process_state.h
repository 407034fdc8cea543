// Per-process and per-thread state of the hook that every part of it reads.
#ifndef REPTRACE_HOOK_PROCESS_STATE_H_
#define REPTRACE_HOOK_PROCESS_STATE_H_

#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>

namespace reptrace::hook {

// libfaketime's dont_fake: set while the hook itself runs on this thread, so the hook's
// own I/O is never traced.
extern __thread bool t_in_hook __attribute__((tls_model("initial-exec")));
// This thread's kernel id, 0 until first asked for (and again in a fork child).
extern __thread uint32_t t_tid __attribute__((tls_model("initial-exec")));

// getpid(), cached: set by the constructor, reset in the fork child.
extern std::atomic<uint32_t> g_pid;

// The thread whose causal context this process's main thread inherits, as
// (pid << 32) | tid, 0 if none (HelloRecord::cause_pid/cause_tid): from REPTRACE_CAUSE when
// an exec'd program starts, or the forking thread in a fork child.
extern std::atomic<uint64_t> g_cause;

inline uint64_t PackCause(uint32_t pid, uint32_t tid) {
  return (static_cast<uint64_t>(pid) << 32) | tid;
}

inline uint32_t CurrentTid() {
  if (t_tid == 0) t_tid = static_cast<uint32_t>(syscall(SYS_gettid));
  return t_tid;
}

// Marks the current thread as inside the hook for the life of the object.
class InHookScope {
 public:
  InHookScope() : was_(t_in_hook) { t_in_hook = true; }
  ~InHookScope() { t_in_hook = was_; }
  InHookScope(const InHookScope&) = delete;
  InHookScope& operator=(const InHookScope&) = delete;

 private:
  const bool was_;
};

}  // namespace reptrace::hook

#endif  // REPTRACE_HOOK_PROCESS_STATE_H_
