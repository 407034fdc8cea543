#include "agent/config_page_writer.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"
#include "common/cidr.h"
#include "common/trace_config.h"

namespace reptrace {
namespace {

// The kernel keeps a program's name (comm) in 16 bytes with its NUL.
constexpr size_t kCommBytes = 15;

absl::Status Errno(absl::string_view what, const std::string& path) {
  return absl::Status(absl::ErrnoToStatusCode(errno),
                      absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

absl::Status TooMany(absl::string_view field, int count, uint32_t limit) {
  return absl::InvalidArgumentError(
      absl::StrCat(field, ": ", count, " entries, the page holds ", limit));
}

absl::Status EncodeRanges(const google::protobuf::RepeatedPtrField<v1::PortRange>& ranges,
                          uint32_t limit, absl::string_view field, PagePortRange* out,
                          uint8_t* count) {
  if (ranges.size() > static_cast<int>(limit)) return TooMany(field, ranges.size(), limit);
  for (int i = 0; i < ranges.size(); ++i) {
    const uint32_t first = ranges[i].first();
    const uint32_t last = ranges[i].last() == 0 ? first : ranges[i].last();
    if (first == 0 || first > 65535 || last > 65535 || last < first) {
      return absl::InvalidArgumentError(absl::StrCat(field, "[", i, "]: bad port range"));
    }
    out[i] = {static_cast<uint16_t>(first), static_cast<uint16_t>(last)};
  }
  *count = static_cast<uint8_t>(ranges.size());
  return absl::OkStatus();
}

absl::Status EncodeNames(const google::protobuf::RepeatedPtrField<std::string>& names,
                         absl::string_view field, size_t cut, uint64_t* out,
                         uint8_t* count) {
  if (names.size() > static_cast<int>(kPageMaxNames)) {
    return TooMany(field, names.size(), kPageMaxNames);
  }
  for (int i = 0; i < names.size(); ++i) {
    const std::string& name = names[i];
    out[i] = NameHash(name.data(), name.size() < cut ? name.size() : cut);
  }
  *count = static_cast<uint8_t>(names.size());
  return absl::OkStatus();
}

absl::Status EncodeFilter(const v1::TraceFilter& filter, absl::string_view node,
                          PageFilter* out) {
  std::memset(out, 0, sizeof(*out));
  switch (filter.action()) {
    case v1::TraceFilter::ACTION_INCLUDE: out->action = kPageInclude; break;
    case v1::TraceFilter::ACTION_EXCLUDE: out->action = kPageExclude; break;
    default: return absl::InvalidArgumentError("action: neither include nor exclude");
  }
  switch (filter.direction()) {
    case v1::DIRECTION_ANY: out->direction = kPageAnyDirection; break;
    case v1::DIRECTION_INBOUND: out->direction = kPageInbound; break;
    case v1::DIRECTION_OUTBOUND: out->direction = kPageOutbound; break;
    default: return absl::InvalidArgumentError("direction: unknown");
  }
  if (!filter.nodes().empty()) {
    out->other_node = 1;
    for (const std::string& name : filter.nodes()) {
      if (name == node) out->other_node = 0;
    }
  }
  if (absl::Status s = EncodeNames(filter.services(), "services", std::string::npos,
                                   out->services, &out->service_count);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = EncodeNames(filter.processes(), "processes", kCommBytes,
                                   out->processes, &out->process_count);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = EncodeRanges(filter.local_ports(), kPageMaxPortRanges, "local_ports",
                                    out->local_ports, &out->local_port_count);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = EncodeRanges(filter.peer_ports(), kPageMaxPortRanges, "peer_ports",
                                    out->peer_ports, &out->peer_port_count);
      !s.ok()) {
    return s;
  }
  if (filter.peer_cidrs_size() > static_cast<int>(kPageMaxCidrs)) {
    return TooMany("peer_cidrs", filter.peer_cidrs_size(), kPageMaxCidrs);
  }
  for (int i = 0; i < filter.peer_cidrs_size(); ++i) {
    absl::StatusOr<Cidr> cidr = ParseCidr(filter.peer_cidrs(i));
    if (!cidr.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("peer_cidrs[", i, "]: ", cidr.status().message()));
    }
    std::memcpy(out->cidrs[i].addr, cidr->addr, 16);
    out->cidrs[i].prefix = static_cast<uint8_t>(cidr->prefix);
  }
  out->cidr_count = static_cast<uint8_t>(filter.peer_cidrs_size());
  return absl::OkStatus();
}

// The seqlock's write side.
void WriteBody(ConfigPage* page, const ConfigBody& body) {
  uint64_t seq = page->seq.load(std::memory_order_relaxed);
  if ((seq & 1) != 0) ++seq;  // left odd by a writer that died
  page->seq.store(seq + 1, std::memory_order_relaxed);
  // The odd seq is visible before any byte of the body changes (pairs with the reader's
  // acquire fence, hook/config_view.h).
  std::atomic_thread_fence(std::memory_order_release);
  std::memcpy(&page->body, &body, sizeof(body));
  page->seq.store(seq + 2, std::memory_order_release);
}

}  // namespace

std::string ConfigPagePath(absl::string_view socket_path) {
  return absl::StrCat(socket_path, kConfigPageSuffix);
}

void DefaultConfigBody(ConfigBody* body) {
  std::memset(body, 0, sizeof(*body));
  body->enabled = 1;
  body->capture_bytes = kCaptureBytes;
}

absl::Status EncodeConfigBody(const v1::TraceConfig& config, uint64_t version,
                              absl::string_view node, ConfigBody* body) {
  std::memset(body, 0, sizeof(*body));
  body->config_version = version;
  body->enabled = ConfigEnabled(config) ? 1 : 0;
  body->trace_unix = config.trace_unix_sockets() ? 1 : 0;
  const uint32_t capture = ConfigCaptureBytes(config);
  body->capture_bytes = capture < kCaptureBytes ? capture : kCaptureBytes;
  body->max_events_per_second = config.max_events_per_second();
  uint8_t inband = 0;
  if (config.inband_ports_size() > static_cast<int>(kPageMaxInbandRanges)) {
    return TooMany("inband_ports", config.inband_ports_size(), kPageMaxInbandRanges);
  }
  if (absl::Status s = EncodeRanges(config.inband_ports(), kPageMaxInbandRanges,
                                    "inband_ports", body->inband_ports, &inband);
      !s.ok()) {
    return s;
  }
  body->inband_count = inband;
  if (config.filters_size() > static_cast<int>(kPageMaxFilters)) {
    return TooMany("filters", config.filters_size(), kPageMaxFilters);
  }
  for (int i = 0; i < config.filters_size(); ++i) {
    if (absl::Status s = EncodeFilter(config.filters(i), node, &body->filters[i]); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("filters[", i, "].", s.message()));
    }
  }
  body->filter_count = static_cast<uint32_t>(config.filters_size());
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ConfigPageWriter>> ConfigPageWriter::Open(std::string path,
                                                                         std::string node) {
  // An existing page of this layout is reused in place.
  int fd = open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (fd >= 0) {
    struct stat st;
    void* memory = MAP_FAILED;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
        static_cast<size_t>(st.st_size) == kConfigPageFileBytes) {
      memory = mmap(nullptr, kConfigPageFileBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    }
    close(fd);
    if (memory != MAP_FAILED) {
      auto* page = static_cast<ConfigPage*>(memory);
      if (page->magic == kConfigPageMagic && page->layout == kConfigPageLayout &&
          page->bytes == sizeof(ConfigPage) && page->seq.load() != 0) {
        if ((page->seq.load() & 1) != 0) {
          // An agent died while writing: the body may be torn. Rewritten whole (the
          // default) until the controller's config comes.
          ConfigBody body;
          DefaultConfigBody(&body);
          WriteBody(page, body);
        }
        return std::unique_ptr<ConfigPageWriter>(
            new ConfigPageWriter(std::move(path), std::move(node), page));
      }
      munmap(memory, kConfigPageFileBytes);
    }
  } else if (errno != ENOENT) {
    return Errno("cannot open the config page", path);
  }
  // A new file, complete before it takes the name.
  const std::string temporary = absl::StrCat(path, ".new.", getpid());
  fd = open(temporary.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) return Errno("cannot create", temporary);
  // 0644 whatever the umask: every hooked process, of any user, reads it.
  if (fchmod(fd, 0644) != 0 || ftruncate(fd, kConfigPageFileBytes) != 0) {
    const absl::Status status = Errno("cannot size", temporary);
    close(fd);
    unlink(temporary.c_str());
    return status;
  }
  void* memory =
      mmap(nullptr, kConfigPageFileBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (memory == MAP_FAILED) {
    const absl::Status status = Errno("cannot map", temporary);
    unlink(temporary.c_str());
    return status;
  }
  auto* page = new (memory) ConfigPage;
  page->magic = kConfigPageMagic;
  page->layout = kConfigPageLayout;
  page->bytes = sizeof(ConfigPage);
  DefaultConfigBody(&page->body);
  page->seq.store(kFirstPageSeq, std::memory_order_release);
  if (rename(temporary.c_str(), path.c_str()) != 0) {
    const absl::Status status = Errno("cannot rename the config page to", path);
    munmap(memory, kConfigPageFileBytes);
    unlink(temporary.c_str());
    return status;
  }
  return std::unique_ptr<ConfigPageWriter>(
      new ConfigPageWriter(std::move(path), std::move(node), page));
}

ConfigPageWriter::~ConfigPageWriter() { munmap(page_, kConfigPageFileBytes); }

absl::Status ConfigPageWriter::Publish(const v1::ConfigVersion& config) {
  ConfigBody body;
  if (absl::Status s = EncodeConfigBody(config.config(), config.version(), node_, &body);
      !s.ok()) {
    return s;
  }
  WriteBody(page_, body);
  return absl::OkStatus();
}

uint64_t ConfigPageWriter::version() const { return page_->body.config_version; }
uint64_t ConfigPageWriter::seq() const { return page_->seq.load(std::memory_order_acquire); }

}  // namespace reptrace
