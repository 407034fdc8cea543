#include "hook/settings.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

#include "hook/agent_link.h"
#include "hook/config_view.h"

namespace reptrace::hook {
namespace settings_internal {

namespace {

constexpr uint64_t kSecondNs = 1'000'000'000;
constexpr uint64_t kMapRetryNs = kSecondNs;

// The page a process follows while it has none from the agent: everything traced. Its seq
// (2) is one no agent's page has (they start at kFirstPageSeq).
ConfigPage g_default_page;

char g_page_path[4096] = {};
bool g_page_path_ok = false;
uint8_t g_env_capture_bytes = kCaptureBytes;
bool g_env_trace_unix = false;

std::atomic<bool> g_page_mapped{false};
std::atomic<uint64_t> g_next_map_ns{0};
std::atomic_flag g_map_lock = ATOMIC_FLAG_INIT;
uint64_t g_service_hash = 0;  // written under g_map_lock before g_names_known
uint64_t g_process_hash = 0;
std::atomic<bool> g_names_known{false};

// The seq whose process-wide values (capture, rate) are in force; updated under a try-lock.
std::atomic<uint64_t> g_settings_seq{0};
std::atomic_flag g_settings_lock = ATOMIC_FLAG_INIT;

// GCRA's theoretical arrival time of the next event (CLOCK_MONOTONIC ns).
std::atomic<uint64_t> g_token_tat{0};

// What the process takes from the page as a whole.
struct PageValues {
  uint32_t capture_bytes = 0;
  uint32_t max_events_per_second = 0;
};

void StoreProcessValues(uint64_t seq, const PageValues& values) {
  if (seq <= g_settings_seq.load(std::memory_order_acquire)) return;
  if (g_settings_lock.test_and_set(std::memory_order_acquire)) return;  // another thread is
  if (seq > g_settings_seq.load(std::memory_order_relaxed)) {
    const uint32_t page_capture =
        values.capture_bytes < kCaptureBytes ? values.capture_bytes : kCaptureBytes;
    g_capture_bytes.store(static_cast<uint8_t>(page_capture < g_env_capture_bytes
                                                   ? page_capture
                                                   : g_env_capture_bytes),
                          std::memory_order_relaxed);
    g_event_interval_ns.store(
        values.max_events_per_second == 0 ? 0 : kSecondNs / values.max_events_per_second,
        std::memory_order_relaxed);
    g_settings_seq.store(seq, std::memory_order_release);
  }
  g_settings_lock.clear(std::memory_order_release);
}

}  // namespace

std::atomic<const ConfigPage*> g_page{&g_default_page};
std::atomic<uint8_t> g_capture_bytes{kCaptureBytes};
std::atomic<uint64_t> g_event_interval_ns{0};

}  // namespace settings_internal

using namespace settings_internal;  // NOLINT: this file's own names

// Reads the page once: the process-wide values (StoreProcessValues) and the connection's
// decision.
uint64_t DecideNewConnection(uint8_t role, const Endpoints& endpoints, bool* traced) {
  const ConfigPage* page = g_page.load(std::memory_order_acquire);
  ConnectionFacts facts;
  facts.inbound = role == static_cast<uint8_t>(SocketRole::kServer);
  facts.has_ports = endpoints.family != kFamilyUnix;
  facts.local_port = endpoints.local_port;
  facts.peer_port = endpoints.peer_port;
  facts.peer_addr = endpoints.peer_addr;
  facts.service_hash = g_service_hash;
  facts.process_hash = g_process_hash;
  PageValues values;
  bool decided = false;
  const uint64_t seq = ReadConsistently(*page, [&](const ConfigBody& body) {
    values.capture_bytes = body.capture_bytes;
    values.max_events_per_second = body.max_events_per_second;
    decided = body.enabled != 0 &&
              (facts.has_ports || body.trace_unix != 0 || g_env_trace_unix) &&
              FiltersTrace(body, facts);
  });
  *traced = seq != 0 && decided;
  if (seq != 0) StoreProcessValues(seq, values);
  return seq;
}

namespace settings_internal {

bool Refresh(ConnectionState* state) {
  bool traced = false;
  const uint64_t seq = DecideNewConnection(state->role, state->endpoints, &traced);
  // Being written: the decision it had stands until the next call.
  if (seq == 0) return state->reporting.load(std::memory_order_relaxed) != 0;
  state->reporting.store(traced ? 1 : 0, std::memory_order_relaxed);
  state->config_seq.store(seq, std::memory_order_relaxed);
  return traced;
}

bool TakeTokenSlow(uint64_t now_ns, uint64_t interval_ns) {
  // A burst of one second's worth: a full bucket holds max_events_per_second tokens.
  const uint64_t tolerance = interval_ns < kSecondNs ? kSecondNs - interval_ns : 0;
  uint64_t tat = g_token_tat.load(std::memory_order_relaxed);
  while (true) {
    const uint64_t base = tat > now_ns ? tat : now_ns;
    if (base - now_ns > tolerance) return false;
    if (g_token_tat.compare_exchange_weak(tat, base + interval_ns,
                                          std::memory_order_relaxed)) {
      return true;
    }
  }
}

}  // namespace settings_internal

void ConfigureSettings(uint8_t env_capture_bytes, bool env_trace_unix) {
  g_env_capture_bytes = env_capture_bytes;
  g_env_trace_unix = env_trace_unix;
  g_capture_bytes.store(env_capture_bytes, std::memory_order_relaxed);
  g_default_page.magic = kConfigPageMagic;
  g_default_page.layout = kConfigPageLayout;
  g_default_page.bytes = sizeof(ConfigPage);
  std::memset(&g_default_page.body, 0, sizeof(g_default_page.body));
  g_default_page.body.enabled = 1;
  g_default_page.body.capture_bytes = kCaptureBytes;
  g_default_page.seq.store(2, std::memory_order_release);
  const char* socket = getenv("REPTRACE_SOCKET");
  if (socket == nullptr || socket[0] == '\0') socket = "/run/reptrace/agent.sock";
  const size_t len = strlen(socket);
  g_page_path_ok = len + sizeof(kConfigPageSuffix) <= sizeof(g_page_path);
  if (g_page_path_ok) {
    std::memcpy(g_page_path, socket, len);
    std::memcpy(g_page_path + len, kConfigPageSuffix, sizeof(kConfigPageSuffix));
  }
}

void MaybeMapConfigPage(uint64_t now_ns) {
  if (g_page_mapped.load(std::memory_order_acquire)) return;
  if (now_ns < g_next_map_ns.load(std::memory_order_relaxed)) return;
  if (g_map_lock.test_and_set(std::memory_order_acquire)) return;
  g_next_map_ns.store(now_ns + kMapRetryNs, std::memory_order_relaxed);
  if (!g_names_known.load(std::memory_order_relaxed)) {
    ProcessNameHashes(&g_service_hash, &g_process_hash);
    g_names_known.store(true, std::memory_order_release);
  }
  // System calls made directly: the fd is ours for these few instructions, never the
  // program's to see (close-on-exec, closed before anything else runs here).
  const int fd = g_page_path_ok ? static_cast<int>(syscall(SYS_openat, AT_FDCWD, g_page_path,
                                                           O_RDONLY | O_CLOEXEC | O_NOFOLLOW))
                                : -1;
  if (fd >= 0) {
    struct stat st;
    void* memory = MAP_FAILED;
    if (syscall(SYS_fstat, fd, &st) == 0 && S_ISREG(st.st_mode) &&
        static_cast<size_t>(st.st_size) >= sizeof(ConfigPage)) {
      memory = mmap(nullptr, sizeof(ConfigPage), PROT_READ, MAP_SHARED, fd, 0);
    }
    syscall(SYS_close, fd);
    if (memory != MAP_FAILED) {
      const auto* page = static_cast<const ConfigPage*>(memory);
      if (page->magic == kConfigPageMagic && page->layout == kConfigPageLayout &&
          page->bytes == sizeof(ConfigPage)) {
        g_page.store(page, std::memory_order_release);
        g_page_mapped.store(true, std::memory_order_release);
      } else {
        munmap(memory, sizeof(ConfigPage));
      }
    }
  }
  g_map_lock.clear(std::memory_order_release);
}

bool TraceUnixSockets() {
  return g_env_trace_unix || g_page.load(std::memory_order_acquire)->body.trace_unix != 0;
}

bool PageInbandPort(uint16_t port) {
  bool listed = false;
  const uint64_t seq = ReadConsistently(*g_page.load(std::memory_order_acquire),
                                        [&](const ConfigBody& body) {
                                          listed = InbandPortListed(body, port);
                                        });
  return seq != 0 && listed;
}

}  // namespace reptrace::hook
