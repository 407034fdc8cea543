#include "hook/real_calls.h"

#include <dlfcn.h>
#include <sys/sendfile.h>

#include "hook/interposed.h"

namespace reptrace::hook {

RealCalls g_real = {};

namespace {

// proxychains-ng's load_sym: take the next definition after ours, and refuse one that is
// ourselves (a second copy of the library, or a broken RTLD_NEXT), which would recurse.
template <typename F>
void Load(F* slot, const char* name, void* self) {
  void* next = dlsym(RTLD_NEXT, name);
  *slot = (next == nullptr || next == self) ? nullptr : reinterpret_cast<F>(next);
}

}  // namespace

void ResolveRealCalls() {
  Load(&g_real.connect, "connect", reinterpret_cast<void*>(&::connect));
  Load(&g_real.getsockopt, "getsockopt", reinterpret_cast<void*>(&::getsockopt));
  Load(&g_real.accept, "accept", reinterpret_cast<void*>(&::accept));
  Load(&g_real.accept4, "accept4", reinterpret_cast<void*>(&::accept4));
  Load(&g_real.close, "close", reinterpret_cast<void*>(&::close));
  Load(&g_real.read, "read", reinterpret_cast<void*>(&::read));
  Load(&g_real.write, "write", reinterpret_cast<void*>(&::write));
  Load(&g_real.recv, "recv", reinterpret_cast<void*>(&::recv));
  Load(&g_real.send, "send", reinterpret_cast<void*>(&::send));
  Load(&g_real.readv, "readv", reinterpret_cast<void*>(&::readv));
  Load(&g_real.writev, "writev", reinterpret_cast<void*>(&::writev));
  Load(&g_real.recvfrom, "recvfrom", reinterpret_cast<void*>(&::recvfrom));
  Load(&g_real.sendto, "sendto", reinterpret_cast<void*>(&::sendto));
  Load(&g_real.sendfile, "sendfile", reinterpret_cast<void*>(&::sendfile));
  Load(&g_real.sendfile64, "sendfile64", reinterpret_cast<void*>(&::sendfile64));
  Load(&g_real.read_chk, "__read_chk", reinterpret_cast<void*>(&::__read_chk));
  Load(&g_real.recv_chk, "__recv_chk", reinterpret_cast<void*>(&::__recv_chk));
  Load(&g_real.recvfrom_chk, "__recvfrom_chk", reinterpret_cast<void*>(&::__recvfrom_chk));
  Load(&g_real.shutdown, "shutdown", reinterpret_cast<void*>(&::shutdown));
  Load(&g_real.recvmsg, "recvmsg", reinterpret_cast<void*>(&::recvmsg));
  Load(&g_real.sendmsg, "sendmsg", reinterpret_cast<void*>(&::sendmsg));
  Load(&g_real.recvmmsg, "recvmmsg", reinterpret_cast<void*>(&::recvmmsg));
  Load(&g_real.sendmmsg, "sendmmsg", reinterpret_cast<void*>(&::sendmmsg));
  Load(&g_real.dup, "dup", reinterpret_cast<void*>(&::dup));
  Load(&g_real.dup2, "dup2", reinterpret_cast<void*>(&::dup2));
  Load(&g_real.dup3, "dup3", reinterpret_cast<void*>(&::dup3));
  Load(&g_real.fcntl, "fcntl", reinterpret_cast<void*>(&::fcntl));
  Load(&g_real.fcntl64, "fcntl64", reinterpret_cast<void*>(&::fcntl64));
  Load(&g_real.close_range, "close_range", reinterpret_cast<void*>(&::close_range));
  Load(&g_real.closefrom, "closefrom", reinterpret_cast<void*>(&::closefrom));
  Load(&g_real.execve, "execve", reinterpret_cast<void*>(&::execve));
  Load(&g_real.execvpe, "execvpe", reinterpret_cast<void*>(&::execvpe));
  Load(&g_real.fexecve, "fexecve", reinterpret_cast<void*>(&::fexecve));
  Load(&g_real.posix_spawn, "posix_spawn", reinterpret_cast<void*>(&::posix_spawn));
  Load(&g_real.posix_spawnp, "posix_spawnp", reinterpret_cast<void*>(&::posix_spawnp));
  Load(&g_real.pthread_create, "pthread_create", reinterpret_cast<void*>(&::pthread_create));
  if (g_real.sendfile64 == nullptr) {
    g_real.sendfile64 = reinterpret_cast<ssize_t (*)(int, int, off64_t*, size_t)>(
        g_real.sendfile);
  }
}

}  // namespace reptrace::hook
