// The interposed process calls: the exec family and posix_spawn (an exec'd program keeps
// the hook: see exec_env.h), and pthread_create (a new thread inherits its creator's causal
// context: the agent learns who created it from an EventKind::kThreadStart record).
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <spawn.h>
#include <stdarg.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

#include "common/event_record.h"
#include "hook/agent_link.h"
#include "hook/exec_env.h"
#include "hook/process_state.h"
#include "hook/real_calls.h"

#define REPTRACE_EXPORT extern "C" __attribute__((visibility("default")))

extern char** environ;

namespace reptrace::hook {
namespace {

// Before an exec or _exit ends this image (the destructor will not run): what is queued
// stays in the ring for the agent, which must have it (FlushAgentLink). Not in a vfork or
// posix_spawn child, which shares our memory but not our threads.
void DeliverQueuedEvents() {
  if (t_in_hook || static_cast<uint32_t>(syscall(SYS_getpid)) !=
                       g_pid.load(std::memory_order_relaxed)) {
    return;
  }
  const int saved = errno;
  InHookScope scope;
  FlushAgentLink();
  errno = saved;
}

// _exit() and _Exit() end the process without running destructors (forked children and
// daemons often end so): the agent must have the ring first. The exit itself is the
// system call glibc's _exit makes.
[[noreturn]] void ExitWithFlush(int status) {
  DeliverQueuedEvents();
  for (;;) syscall(SYS_exit_group, status);
}

// The causal parent to hand an exec'd or spawned program: this thread, if this process
// talks to the agent (which then knows the thread's context); otherwise what this process
// inherited itself, passed on. The tid is the cached one, never asked of the kernel here:
// in a vfork child the TLS is the parent thread's and must not be overwritten. A thread
// that never recorded anything falls back to the main thread, whose context is the
// process's inherited one.
uint64_t CauseForNewProgram() {
  if (!LinkStarted()) return g_cause.load(std::memory_order_relaxed);
  const uint32_t pid = g_pid.load(std::memory_order_relaxed);
  return PackCause(pid, t_tid != 0 ? t_tid : pid);
}

int ExecveWithHook(const char* path, char* const* argv, char* const* envp) {
  EnvScratch scratch;
  char* const* env = t_in_hook ? envp : WithHookEnvironment(envp, &scratch, CauseForNewProgram());
  DeliverQueuedEvents();
  return RealExecve(path, argv, env);
}

int ExecvpeWithHook(const char* file, char* const* argv, char* const* envp) {
  if (g_real.execvpe == nullptr) {
    errno = ENOSYS;
    return -1;
  }
  EnvScratch scratch;
  char* const* env = t_in_hook ? envp : WithHookEnvironment(envp, &scratch, CauseForNewProgram());
  DeliverQueuedEvents();
  return g_real.execvpe(file, argv, env);
}

// The arguments of execl/execle/execlp after `arg`, up to and including the NULL.
int CountArgs(va_list ap) {
  int n = 1;
  while (va_arg(ap, char*) != nullptr) {
    if (n == INT_MAX - 1) return -1;
    ++n;
  }
  return n;
}

// execl, execle, execlp: the arguments after `arg` (up to the NULL; then, if `has_envp`,
// execle's environment) go into an array on the stack, as glibc does, and `exec` (path or
// file, argv, envp) runs with them. No malloc: this runs between vfork and exec.
int ExecWithArgList(int (*exec)(const char*, char* const*, char* const*), const char* path,
                    const char* arg, va_list ap, bool has_envp) {
  va_list count;
  va_copy(count, ap);
  const int n = CountArgs(count);
  va_end(count);
  if (n < 0) {
    errno = E2BIG;
    return -1;
  }
  char* argv[n + 1];
  argv[0] = const_cast<char*>(arg);
  for (int i = 1; i <= n; ++i) argv[i] = va_arg(ap, char*);
  char* const* envp = has_envp ? va_arg(ap, char* const*) : environ;
  return exec(path, argv, envp);
}

// The pthread_create trampolines: a fixed pool, never malloc. With none free, the thread
// starts unwrapped (and inherits nothing).
struct ThreadStart {
  std::atomic<bool> busy;
  void* (*routine)(void*);
  void* arg;
  uint32_t parent_tid;
};
constexpr size_t kThreadStarts = 256;
ThreadStart g_thread_starts[kThreadStarts];

ThreadStart* TakeThreadStart() {
  for (ThreadStart& slot : g_thread_starts) {
    bool expected = false;
    if (!slot.busy.load(std::memory_order_relaxed) &&
        slot.busy.compare_exchange_strong(expected, true, std::memory_order_acquire)) {
      return &slot;
    }
  }
  return nullptr;
}

void EmitThreadStart(uint32_t parent_tid) {
  const int saved = errno;
  InHookScope scope;
  timespec wall, mono;
  clock_gettime(CLOCK_REALTIME, &wall);
  clock_gettime(CLOCK_MONOTONIC, &mono);
  EventRecord r;
  std::memset(&r, 0, sizeof(r));
  r.header = {kRecordMagic, static_cast<uint16_t>(RecordType::kEvent), sizeof(EventRecord)};
  r.kind = static_cast<uint8_t>(EventKind::kThreadStart);
  r.pid = g_pid.load(std::memory_order_relaxed);
  r.tid = CurrentTid();
  r.fd = static_cast<int32_t>(parent_tid);
  r.wall_ns = uint64_t(wall.tv_sec) * 1000000000u + uint64_t(wall.tv_nsec);
  r.mono_ns = uint64_t(mono.tv_sec) * 1000000000u + uint64_t(mono.tv_nsec);
  Publish(r);
  errno = saved;
}

void* ThreadTrampoline(void* p) {
  auto* slot = static_cast<ThreadStart*>(p);
  void* (*routine)(void*) = slot->routine;
  void* arg = slot->arg;
  const uint32_t parent_tid = slot->parent_tid;
  slot->busy.store(false, std::memory_order_release);
  EmitThreadStart(parent_tid);
  return routine(arg);
}

__attribute__((constructor(102))) void CaptureExecEnvironment() {
  const int saved = errno;
  InHookScope scope;
  ResolveRealCalls();
  Dl_info info;
  const char* self = nullptr;
  if (dladdr(reinterpret_cast<void*>(&CaptureExecEnvironment), &info) != 0) {
    self = info.dli_fname;
  }
  CaptureHookEnvironment(environ, self);
  errno = saved;
}

}  // namespace
}  // namespace reptrace::hook

using namespace reptrace::hook;  // NOLINT: the C entry points below are outside any namespace

REPTRACE_EXPORT int execve(const char* path, char* const argv[], char* const envp[]) {
  return ExecveWithHook(path, argv, envp);
}

REPTRACE_EXPORT int execv(const char* path, char* const argv[]) {
  return ExecveWithHook(path, argv, environ);
}

REPTRACE_EXPORT int execvp(const char* file, char* const argv[]) {
  return ExecvpeWithHook(file, argv, environ);
}

REPTRACE_EXPORT int execvpe(const char* file, char* const argv[], char* const envp[]) {
  return ExecvpeWithHook(file, argv, envp);
}

REPTRACE_EXPORT int fexecve(int fd, char* const argv[], char* const envp[]) {
  if (g_real.fexecve == nullptr) {
    errno = ENOSYS;
    return -1;
  }
  EnvScratch scratch;
  char* const* env = t_in_hook ? envp : WithHookEnvironment(envp, &scratch, CauseForNewProgram());
  DeliverQueuedEvents();
  return g_real.fexecve(fd, argv, env);
}

// execl, execle, execlp: see ExecWithArgList.
REPTRACE_EXPORT int execl(const char* path, const char* arg, ...) {
  va_list ap;
  va_start(ap, arg);
  const int result = ExecWithArgList(ExecveWithHook, path, arg, ap, /*has_envp=*/false);
  va_end(ap);
  return result;
}

REPTRACE_EXPORT int execlp(const char* file, const char* arg, ...) {
  va_list ap;
  va_start(ap, arg);
  const int result = ExecWithArgList(ExecvpeWithHook, file, arg, ap, /*has_envp=*/false);
  va_end(ap);
  return result;
}

REPTRACE_EXPORT int execle(const char* path, const char* arg, ...) {
  va_list ap;
  va_start(ap, arg);
  const int result = ExecWithArgList(ExecveWithHook, path, arg, ap, /*has_envp=*/true);
  va_end(ap);
  return result;
}

REPTRACE_EXPORT int posix_spawn(pid_t* pid, const char* path,
                                const posix_spawn_file_actions_t* actions,
                                const posix_spawnattr_t* attr, char* const argv[],
                                char* const envp[]) {
  if (g_real.posix_spawn == nullptr) return ENOSYS;
  EnvScratch scratch;
  char* const* env = t_in_hook ? envp : WithHookEnvironment(envp, &scratch, CauseForNewProgram());
  return g_real.posix_spawn(pid, path, actions, attr, argv, env);
}

REPTRACE_EXPORT int posix_spawnp(pid_t* pid, const char* file,
                                 const posix_spawn_file_actions_t* actions,
                                 const posix_spawnattr_t* attr, char* const argv[],
                                 char* const envp[]) {
  if (g_real.posix_spawnp == nullptr) return ENOSYS;
  EnvScratch scratch;
  char* const* env = t_in_hook ? envp : WithHookEnvironment(envp, &scratch, CauseForNewProgram());
  return g_real.posix_spawnp(pid, file, actions, attr, argv, env);
}

REPTRACE_EXPORT int pthread_create(pthread_t* thread, const pthread_attr_t* attr,
                                   void* (*routine)(void*), void* arg) {
  if (g_real.pthread_create == nullptr) {
    // Before the constructor ran (another library's constructor starting a thread).
    g_real.pthread_create = reinterpret_cast<decltype(g_real.pthread_create)>(
        dlsym(RTLD_NEXT, "pthread_create"));
    if (g_real.pthread_create == nullptr) return EAGAIN;
  }
  // Only once this process traces something is there a context to inherit.
  ThreadStart* slot = nullptr;
  if (!t_in_hook && g_pid.load(std::memory_order_acquire) != 0 &&
      EventsRecorded() + EventsDropped() > 0) {
    slot = TakeThreadStart();
  }
  if (slot == nullptr) return g_real.pthread_create(thread, attr, routine, arg);
  slot->routine = routine;
  slot->arg = arg;
  slot->parent_tid = CurrentTid();
  const int result = g_real.pthread_create(thread, attr, ThreadTrampoline, slot);
  if (result != 0) slot->busy.store(false, std::memory_order_release);
  return result;
}

REPTRACE_EXPORT void _exit(int status) noexcept { ExitWithFlush(status); }

REPTRACE_EXPORT void _Exit(int status) noexcept { ExitWithFlush(status); }
