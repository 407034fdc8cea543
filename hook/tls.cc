// The OpenSSL entry points of libreptrace.so (see tls.h). No OpenSSL header is included and
// libssl is never linked: the SSL object is opaque to us and every libssl function we call
// is looked up at run time, so the hook adds no dependency to programs without TLS.
#include "hook/tls.h"

#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <string.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "hook/process_state.h"

// OpenSSL's opaque types, declared as OpenSSL 3 (and 1.1.1) declare them.
struct ssl_st;
struct bio_st;
typedef struct ssl_st SSL;
typedef struct bio_st BIO;

#define REPTRACE_EXPORT extern "C" __attribute__((visibility("default")))

REPTRACE_EXPORT int SSL_read(SSL* ssl, void* buf, int num);
REPTRACE_EXPORT int SSL_write(SSL* ssl, const void* buf, int num);
REPTRACE_EXPORT int SSL_read_ex(SSL* ssl, void* buf, size_t num, size_t* readbytes);
REPTRACE_EXPORT int SSL_write_ex(SSL* ssl, const void* buf, size_t num, size_t* written);
REPTRACE_EXPORT int SSL_peek(SSL* ssl, void* buf, int num);
REPTRACE_EXPORT int SSL_peek_ex(SSL* ssl, void* buf, size_t num, size_t* readbytes);
REPTRACE_EXPORT int SSL_do_handshake(SSL* ssl);
REPTRACE_EXPORT int SSL_connect(SSL* ssl);
REPTRACE_EXPORT int SSL_accept(SSL* ssl);
REPTRACE_EXPORT int SSL_shutdown(SSL* ssl);

namespace reptrace::hook {

__thread TlsCall* t_tls_call __attribute__((tls_model("initial-exec"))) = nullptr;

namespace {

constexpr int kReceivedShutdown = 2;  // OpenSSL's SSL_RECEIVED_SHUTDOWN

using ReadFn = int (*)(SSL*, void*, int);
using WriteFn = int (*)(SSL*, const void*, int);
using ReadExFn = int (*)(SSL*, void*, size_t, size_t*);
using WriteExFn = int (*)(SSL*, const void*, size_t, size_t*);
using StepFn = int (*)(SSL*);
using GetBioFn = BIO* (*)(const SSL*);
using GetFdFn = int (*)(const SSL*);
using GetShutdownFn = int (*)(const SSL*);

enum Fn {
  kRead, kWrite, kReadEx, kWriteEx, kPeek, kPeekEx, kDoHandshake, kConnect, kAccept,
  kShutdown, kGetRbio, kGetWbio, kGetRfd, kGetWfd, kGetShutdown, kFnCount
};

struct FnInfo {
  const char* name;
  void* self;  // our own definition, never to be taken for the real one
};

const FnInfo kFns[kFnCount] = {
    {"SSL_read", reinterpret_cast<void*>(&::SSL_read)},
    {"SSL_write", reinterpret_cast<void*>(&::SSL_write)},
    {"SSL_read_ex", reinterpret_cast<void*>(&::SSL_read_ex)},
    {"SSL_write_ex", reinterpret_cast<void*>(&::SSL_write_ex)},
    {"SSL_peek", reinterpret_cast<void*>(&::SSL_peek)},
    {"SSL_peek_ex", reinterpret_cast<void*>(&::SSL_peek_ex)},
    {"SSL_do_handshake", reinterpret_cast<void*>(&::SSL_do_handshake)},
    {"SSL_connect", reinterpret_cast<void*>(&::SSL_connect)},
    {"SSL_accept", reinterpret_cast<void*>(&::SSL_accept)},
    {"SSL_shutdown", reinterpret_cast<void*>(&::SSL_shutdown)},
    {"SSL_get_rbio", nullptr},
    {"SSL_get_wbio", nullptr},
    {"SSL_get_rfd", nullptr},
    {"SSL_get_wfd", nullptr},
    {"SSL_get_shutdown", nullptr},
};

// The real libssl functions. Unlike the libc calls (real_calls.h), these cannot be resolved
// in the library constructor: libssl may not be loaded yet (python dlopen()s _ssl, and
// libssl with it, long after start-up). So they are resolved on the first SSL_* call of the
// process, once: that call necessarily comes from a loaded libssl's user, and every later
// call only loads the cached pointers (an acquire load of g_resolved, then relaxed loads),
// never dlsym(), which may allocate and take the loader's lock. Two threads racing on the
// first call both resolve and store the same values.
std::atomic<void*> g_fn[kFnCount];
std::atomic<bool> g_resolved{false};

// Where the global scope does not hold libssl (it was loaded by a dlopen() without
// RTLD_GLOBAL, as python loads _ssl), dlsym(RTLD_NEXT) cannot see it: find the loaded
// libssl by name and open it again with RTLD_NOLOAD (which never loads anything).
int FindLibssl(dl_phdr_info* info, size_t, void* out) {
  const char* name = info->dlpi_name;
  if (name == nullptr) return 0;
  const char* base = strrchr(name, '/');
  base = base == nullptr ? name : base + 1;
  if (strncmp(base, "libssl.so", 9) != 0 || strlen(name) >= 512) return 0;
  strcpy(static_cast<char*>(out), name);
  return 1;
}

void* LoadedLibssl() {
  char path[512] = {};
  if (dl_iterate_phdr(FindLibssl, path) == 0) return nullptr;
  return dlopen(path, RTLD_LAZY | RTLD_NOLOAD);
}

void Resolve() {
  if (g_resolved.load(std::memory_order_acquire)) return;
  const int saved = errno;
  InHookScope scope;
  void* libssl = nullptr;
  bool looked_for_libssl = false;
  for (int i = 0; i < kFnCount; ++i) {
    void* fn = dlsym(RTLD_NEXT, kFns[i].name);
    if (fn == nullptr || fn == kFns[i].self) {
      if (!looked_for_libssl) {
        libssl = LoadedLibssl();
        looked_for_libssl = true;
      }
      fn = libssl == nullptr ? nullptr : dlsym(libssl, kFns[i].name);
      if (fn == kFns[i].self) fn = nullptr;
    }
    g_fn[i].store(fn, std::memory_order_relaxed);
  }
  g_resolved.store(true, std::memory_order_release);
  errno = saved;
}

template <typename F>
F Real(Fn fn) {
  Resolve();
  return reinterpret_cast<F>(g_fn[fn].load(std::memory_order_relaxed));
}

// SSL object -> the traced fd found under it, for SSL objects whose BIO does not tell
// (curl's). Lock-free and allocation-free: one 64-bit word per slot holds the object's
// address (16-byte aligned, below 2^48: 44 bits) and the fd (below 2^20 =
// ConnectionTable::kMaxFds). A collision overwrites; a miss only means a call that moved
// no raw bytes goes unrecorded.
constexpr int kCacheBits = 10;
std::atomic<uint64_t> g_fd_of_ssl[1 << kCacheBits];

uint64_t CacheKey(const SSL* ssl) {
  const uintptr_t p = reinterpret_cast<uintptr_t>(ssl);
  if ((p & 15) != 0 || (p >> 48) != 0) return 0;  // not cacheable
  return static_cast<uint64_t>(p >> 4);
}

std::atomic<uint64_t>& CacheSlot(uint64_t key) {
  return g_fd_of_ssl[(key * 0x9e3779b97f4a7c15ULL) >> (64 - kCacheBits)];
}

void RememberFd(const SSL* ssl, int fd) {
  const uint64_t key = CacheKey(ssl);
  if (key == 0 || fd < 0 || fd >= (1 << 20)) return;
  CacheSlot(key).store((key << 20) | static_cast<uint64_t>(fd), std::memory_order_relaxed);
}

int RememberedFd(const SSL* ssl) {
  const uint64_t key = CacheKey(ssl);
  if (key == 0) return -1;
  const uint64_t v = CacheSlot(key).load(std::memory_order_relaxed);
  return (v >> 20) == key ? static_cast<int>(v & ((1 << 20) - 1)) : -1;
}

enum class Use { kRead, kWrite, kOther };

// The socket fd under `ssl` as its BIO tells it, -1 if it does not (not a socket BIO). Only
// getters that neither fail on a valid SSL object nor touch errno or the error queue: the
// BIO is checked first, as SSL_get_rfd() on an SSL without one would record an error.
int BioFd(SSL* ssl, Use use) {
  const bool write = use == Use::kWrite;
  auto get_bio = reinterpret_cast<GetBioFn>(
      g_fn[write ? kGetWbio : kGetRbio].load(std::memory_order_relaxed));
  auto get_fd = reinterpret_cast<GetFdFn>(
      g_fn[write ? kGetWfd : kGetRfd].load(std::memory_order_relaxed));
  if (get_bio == nullptr || get_fd == nullptr || get_bio(ssl) == nullptr) return -1;
  return get_fd(ssl);
}

// One real SSL_* call, made inside a TLS scope: the raw socket calls it makes are not
// recorded (TlsOwnsRawBytes), and reveal the traced fd underneath. The program's errno is
// the real call's; SSL_get_error() sees the same SSL state and error queue as without us.
class TlsCallScope {
 public:
  // Nested calls (libssl's SSL_connect calls SSL_do_handshake), calls made by the hook
  // itself, and calls before set-up go straight to libssl.
  static bool Wanted() { return t_tls_call == nullptr && !t_in_hook && TlsTracingReady(); }

  TlsCallScope(SSL* ssl, Use use) : ssl_(ssl), use_(use) {
    const int saved = errno;
    // A socket BIO tells the fd before any byte moves: mark the connection now.
    const int fd = BioFd(ssl, use);
    if (fd >= 0 && (state_ = TlsFindConnection(fd)) != nullptr) {
      fd_ = fd;
      state_->tls.store(1, std::memory_order_relaxed);
    }
    t_tls_call = &call_;
    errno = saved;
  }
  ~TlsCallScope() { t_tls_call = nullptr; }
  TlsCallScope(const TlsCallScope&) = delete;
  TlsCallScope& operator=(const TlsCallScope&) = delete;

  // After the real call (which returned with errno `err`): records `moved` plaintext bytes,
  // or the end of the stream if `moved` is 0. errno is `err` again on return.
  void Record(EventKind kind, const void* buf, ssize_t moved, const TlsTime& time, int err) {
    t_tls_call = nullptr;
    {
      InHookScope scope;
      ConnectionState* state = Connection();
      if (state != nullptr) RecordPlaintext(state, fd_, kind, buf, moved, time);
    }
    errno = err;
  }

  // After a real call that moved no plaintext: only remembers the fd it found.
  void Finish(int err) {
    t_tls_call = nullptr;
    Connection();
    errno = err;
  }

  // Did the real call end with the peer's close_notify (or an EOF OpenSSL was told to take
  // as one)? A getter only: SSL_get_error() would peek the error queue.
  bool PeerClosed() const {
    auto get_shutdown =
        reinterpret_cast<GetShutdownFn>(g_fn[kGetShutdown].load(std::memory_order_relaxed));
    return get_shutdown != nullptr && (get_shutdown(ssl_) & kReceivedShutdown) != 0;
  }

 private:
  // The traced connection under ssl_, found by its BIO, by the call's own raw I/O, or by
  // an earlier call's; nullptr if there is none (or it was closed meanwhile).
  ConnectionState* Connection() {
    if (state_ != nullptr) return state_;
    if (call_.fd >= 0) {
      fd_ = call_.fd;
      RememberFd(ssl_, fd_);
    } else if (use_ != Use::kOther) {
      fd_ = RememberedFd(ssl_);
    }
    if (fd_ < 0) return nullptr;
    state_ = TlsFindConnection(fd_);
    if (state_ != nullptr && state_->tls.load(std::memory_order_relaxed) == 0) state_ = nullptr;
    return state_;
  }

  SSL* const ssl_;
  const Use use_;
  TlsCall call_;
  int fd_ = -1;
  ConnectionState* state_ = nullptr;
};

int Unresolved() {
  errno = ENOSYS;
  return -1;
}

// SSL_read / SSL_peek and their _ex forms: `Call` returns the real call's result; `bytes`
// tells how many bytes it delivered (when positive).
template <typename Call, typename Bytes>
int Receive(SSL* ssl, void* buf, size_t num, bool record, Call call, Bytes bytes) {
  if (!TlsCallScope::Wanted()) return call();
  TlsCallScope scope(ssl, Use::kRead);
  const int result = call();
  const int err = errno;
  const TlsTime time = TlsTimeNow();
  const ssize_t moved = bytes(result);
  if (record && moved > 0) {
    scope.Record(EventKind::kRecv, buf, moved, time, err);
  } else if (record && moved == 0 && num > 0 && scope.PeerClosed()) {
    scope.Record(EventKind::kRecv, buf, 0, time, err);
  } else {
    scope.Finish(err);
  }
  return result;
}

template <typename Call, typename Bytes>
int Send(SSL* ssl, const void* buf, Call call, Bytes bytes) {
  if (!TlsCallScope::Wanted()) return call();
  TlsCallScope scope(ssl, Use::kWrite);
  const TlsTime time = TlsTimeNow();  // a send's bytes move at its start
  const int result = call();
  const int err = errno;
  const ssize_t moved = bytes(result);
  if (moved > 0) {
    scope.Record(EventKind::kSend, buf, moved, time, err);
  } else {
    scope.Finish(err);
  }
  return result;
}

// The handshake and shutdown steps: no plaintext, but their raw bytes are TLS records.
int Step(Fn fn, SSL* ssl) {
  const auto real = Real<StepFn>(fn);
  if (real == nullptr) return Unresolved();
  if (!TlsCallScope::Wanted()) return real(ssl);
  TlsCallScope scope(ssl, Use::kOther);
  const int result = real(ssl);
  scope.Finish(errno);
  return result;
}

}  // namespace
}  // namespace reptrace::hook

using namespace reptrace::hook;  // NOLINT: the C entry points below are outside any namespace

REPTRACE_EXPORT int SSL_read(SSL* ssl, void* buf, int num) {
  const auto real = Real<ReadFn>(kRead);
  if (real == nullptr) return Unresolved();
  return Receive(
      ssl, buf, num > 0 ? static_cast<size_t>(num) : 0, true,
      [&] { return real(ssl, buf, num); }, [](int r) { return static_cast<ssize_t>(r); });
}

REPTRACE_EXPORT int SSL_read_ex(SSL* ssl, void* buf, size_t num, size_t* readbytes) {
  const auto real = Real<ReadExFn>(kReadEx);
  if (real == nullptr) return Unresolved();
  return Receive(
      ssl, buf, readbytes != nullptr ? num : 0, true,
      [&] { return real(ssl, buf, num, readbytes); },
      [&](int r) { return r == 1 && readbytes != nullptr ? ssize_t(*readbytes) : ssize_t{0}; });
}

REPTRACE_EXPORT int SSL_peek(SSL* ssl, void* buf, int num) {
  const auto real = Real<ReadFn>(kPeek);
  if (real == nullptr) return Unresolved();
  return Receive(
      ssl, buf, 0, false, [&] { return real(ssl, buf, num); }, [](int) { return ssize_t{0}; });
}

REPTRACE_EXPORT int SSL_peek_ex(SSL* ssl, void* buf, size_t num, size_t* readbytes) {
  const auto real = Real<ReadExFn>(kPeekEx);
  if (real == nullptr) return Unresolved();
  return Receive(
      ssl, buf, 0, false, [&] { return real(ssl, buf, num, readbytes); },
      [](int) { return ssize_t{0}; });
}

REPTRACE_EXPORT int SSL_write(SSL* ssl, const void* buf, int num) {
  const auto real = Real<WriteFn>(kWrite);
  if (real == nullptr) return Unresolved();
  return Send(
      ssl, buf, [&] { return real(ssl, buf, num); },
      [](int r) { return static_cast<ssize_t>(r); });
}

REPTRACE_EXPORT int SSL_write_ex(SSL* ssl, const void* buf, size_t num, size_t* written) {
  const auto real = Real<WriteExFn>(kWriteEx);
  if (real == nullptr) return Unresolved();
  return Send(
      ssl, buf, [&] { return real(ssl, buf, num, written); },
      [&](int r) { return r == 1 && written != nullptr ? ssize_t(*written) : ssize_t{0}; });
}

REPTRACE_EXPORT int SSL_do_handshake(SSL* ssl) { return Step(kDoHandshake, ssl); }
REPTRACE_EXPORT int SSL_connect(SSL* ssl) { return Step(kConnect, ssl); }
REPTRACE_EXPORT int SSL_accept(SSL* ssl) { return Step(kAccept, ssl); }
REPTRACE_EXPORT int SSL_shutdown(SSL* ssl) { return Step(kShutdown, ssl); }
