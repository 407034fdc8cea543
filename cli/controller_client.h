// reptracectl's side of reptrace.v1.QueryService and reptrace.v1.ConfigService (one
// channel): one blocking call per method, each with its own deadline. The gRPC boundary: errors come back as absl::Status with the same
// code and a short one-line reason meant for the user.
#ifndef REPTRACE_CLI_CONTROLLER_CLIENT_H_
#define REPTRACE_CLI_CONTROLLER_CLIENT_H_

#include <cstdint>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "proto/reptrace.grpc.pb.h"

namespace reptrace {
namespace cli {

class ControllerClient final {
 public:
  // Connects lazily (on the first call), without TLS.
  ControllerClient(const std::string& address, absl::Duration timeout);

  absl::StatusOr<v1::ListTracesResponse> ListTraces(const v1::ListTracesRequest& request);
  absl::StatusOr<v1::Trace> GetTrace(uint64_t trace_id);
  absl::StatusOr<v1::ListAgentsResponse> ListAgents();
  absl::StatusOr<v1::GetStatsResponse> GetStats();

  absl::StatusOr<v1::ConfigVersion> GetConfig();
  // FailedPrecondition when the current version is not request.expected_version();
  // InvalidArgument when the controller finds the document invalid.
  absl::StatusOr<v1::ConfigVersion> SetConfig(const v1::SetConfigRequest& request);
  absl::StatusOr<v1::ListConfigHistoryResponse> ListConfigHistory(int limit);

 private:
  // A context whose deadline is `timeout_` from now.
  void PrepareContext(grpc::ClientContext* context) const;
  absl::Status FromGrpc(const grpc::Status& status) const;

  absl::Duration timeout_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::QueryService::Stub> stub_;
  std::unique_ptr<v1::ConfigService::Stub> config_stub_;
};

// A one-line, human-sized reason for a failed call: "connection refused", "cannot
// resolve the host name", "no answer within 10s", or gRPC's message on one line, cut
// to at most 160 characters. Never empty.
std::string ShortRpcReason(const grpc::Status& status, absl::Duration timeout);

}  // namespace cli
}  // namespace reptrace

#endif  // REPTRACE_CLI_CONTROLLER_CLIENT_H_
