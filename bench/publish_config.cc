// Writes a trace config onto an agent's config page, as the agent does when the controller
// pushes one: for benchmarks that run a bare agent (no controller) and need the hooked
// processes to follow a given config (e.g. tracing switched off).
//
//   publish_config PAGE_PATH VERSION 'JSON TraceConfig'
//
// e.g. publish_config /tmp/x/agent.sock.config 2 '{"enabled": false}'
#include <cstdio>
#include <cstdlib>
#include <string>

#include <google/protobuf/util/json_util.h>

#include "agent/config_page_writer.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: publish_config PAGE_PATH VERSION 'JSON TraceConfig'\n");
    return 2;
  }
  reptrace::v1::ConfigVersion version;
  version.set_version(std::strtoull(argv[2], nullptr, 10));
  const auto parsed =
      google::protobuf::util::JsonStringToMessage(argv[3], version.mutable_config());
  if (!parsed.ok()) {
    std::fprintf(stderr, "publish_config: bad config: %s\n", parsed.ToString().c_str());
    return 2;
  }
  auto writer = reptrace::ConfigPageWriter::Open(argv[1], "bench");
  if (!writer.ok()) {
    std::fprintf(stderr, "publish_config: %s\n", writer.status().ToString().c_str());
    return 1;
  }
  if (absl::Status status = (*writer)->Publish(version); !status.ok()) {
    std::fprintf(stderr, "publish_config: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
