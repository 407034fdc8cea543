#include "hook/config_view.h"

namespace reptrace::hook {
namespace {

uint32_t Clamp(uint32_t count, uint32_t limit) { return count < limit ? count : limit; }

bool InRanges(const PagePortRange* ranges, uint32_t count, uint16_t port) {
  for (uint32_t i = 0; i < count; ++i) {
    if (port >= ranges[i].first && port <= ranges[i].last) return true;
  }
  return false;
}

bool HashListed(const uint64_t* hashes, uint32_t count, uint64_t hash) {
  for (uint32_t i = 0; i < count; ++i) {
    if (hashes[i] == hash) return true;
  }
  return false;
}

bool InCidr(const PageCidr& cidr, const uint8_t* addr) {
  const uint32_t prefix = cidr.prefix < 128 ? cidr.prefix : 128;
  const uint32_t whole = prefix / 8;
  for (uint32_t i = 0; i < whole; ++i) {
    if (addr[i] != cidr.addr[i]) return false;
  }
  const uint32_t bits = prefix % 8;
  if (bits == 0) return true;
  const uint8_t mask = static_cast<uint8_t>(0xff << (8 - bits));
  return (addr[whole] & mask) == (cidr.addr[whole] & mask);
}

bool Matches(const PageFilter& filter, const ConnectionFacts& facts) {
  if (filter.other_node != 0) return false;
  if (filter.direction == kPageInbound && !facts.inbound) return false;
  if (filter.direction == kPageOutbound && facts.inbound) return false;
  const uint32_t services = Clamp(filter.service_count, kPageMaxNames);
  if (services > 0 && !HashListed(filter.services, services, facts.service_hash)) return false;
  const uint32_t processes = Clamp(filter.process_count, kPageMaxNames);
  if (processes > 0 && !HashListed(filter.processes, processes, facts.process_hash)) {
    return false;
  }
  const uint32_t local = Clamp(filter.local_port_count, kPageMaxPortRanges);
  if (local > 0 && !(facts.has_ports && InRanges(filter.local_ports, local, facts.local_port))) {
    return false;
  }
  const uint32_t peer = Clamp(filter.peer_port_count, kPageMaxPortRanges);
  if (peer > 0 && !(facts.has_ports && InRanges(filter.peer_ports, peer, facts.peer_port))) {
    return false;
  }
  const uint32_t cidrs = Clamp(filter.cidr_count, kPageMaxCidrs);
  if (cidrs > 0) {
    if (!facts.has_ports || facts.peer_addr == nullptr) return false;
    bool any = false;
    for (uint32_t i = 0; i < cidrs && !any; ++i) any = InCidr(filter.cidrs[i], facts.peer_addr);
    if (!any) return false;
  }
  return true;
}

}  // namespace

bool FiltersTrace(const ConfigBody& body, const ConnectionFacts& facts) {
  const uint32_t count = Clamp(body.filter_count, kPageMaxFilters);
  bool any_include = false;
  for (uint32_t i = 0; i < count; ++i) {
    const PageFilter& filter = body.filters[i];
    if (Matches(filter, facts)) return filter.action != kPageExclude;
    any_include = any_include || filter.action == kPageInclude;
  }
  return !any_include;
}

bool InbandPortListed(const ConfigBody& body, uint16_t port) {
  return InRanges(body.inband_ports, Clamp(body.inband_count, kPageMaxInbandRanges), port);
}

}  // namespace reptrace::hook
