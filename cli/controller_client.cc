#include "cli/controller_client.h"

#include <chrono>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/ids.h"

namespace reptrace {
namespace cli {

ControllerClient::ControllerClient(const std::string& address, absl::Duration timeout)
    : timeout_(timeout),
      channel_(grpc::CreateChannel(address, grpc::InsecureChannelCredentials())),
      stub_(v1::QueryService::NewStub(channel_)),
      config_stub_(v1::ConfigService::NewStub(channel_)) {}

void ControllerClient::PrepareContext(grpc::ClientContext* context) const {
  context->set_deadline(std::chrono::system_clock::now() + absl::ToChronoNanoseconds(timeout_));
}

absl::Status ControllerClient::FromGrpc(const grpc::Status& status) const {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      ShortRpcReason(status, timeout_));
}

absl::StatusOr<v1::ListTracesResponse> ControllerClient::ListTraces(
    const v1::ListTracesRequest& request) {
  grpc::ClientContext context;
  PrepareContext(&context);
  v1::ListTracesResponse response;
  absl::Status status = FromGrpc(stub_->ListTraces(&context, request, &response));
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<v1::Trace> ControllerClient::GetTrace(uint64_t trace_id) {
  grpc::ClientContext context;
  PrepareContext(&context);
  v1::GetTraceRequest request;
  request.set_trace_id(FormatId(trace_id));
  v1::Trace response;
  absl::Status status = FromGrpc(stub_->GetTrace(&context, request, &response));
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<v1::ListAgentsResponse> ControllerClient::ListAgents() {
  grpc::ClientContext context;
  PrepareContext(&context);
  v1::ListAgentsResponse response;
  absl::Status status = FromGrpc(stub_->ListAgents(&context, v1::ListAgentsRequest(), &response));
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<v1::GetStatsResponse> ControllerClient::GetStats() {
  grpc::ClientContext context;
  PrepareContext(&context);
  v1::GetStatsResponse response;
  absl::Status status = FromGrpc(stub_->GetStats(&context, v1::GetStatsRequest(), &response));
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<v1::ConfigVersion> ControllerClient::GetConfig() {
  grpc::ClientContext context;
  PrepareContext(&context);
  v1::ConfigVersion response;
  absl::Status status =
      FromGrpc(config_stub_->GetConfig(&context, v1::GetConfigRequest(), &response));
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<v1::ConfigVersion> ControllerClient::SetConfig(
    const v1::SetConfigRequest& request) {
  grpc::ClientContext context;
  PrepareContext(&context);
  v1::ConfigVersion response;
  absl::Status status = FromGrpc(config_stub_->SetConfig(&context, request, &response));
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<v1::ListConfigHistoryResponse> ControllerClient::ListConfigHistory(int limit) {
  grpc::ClientContext context;
  PrepareContext(&context);
  v1::ListConfigHistoryRequest request;
  request.set_limit(limit);
  v1::ListConfigHistoryResponse response;
  absl::Status status = FromGrpc(config_stub_->ListConfigHistory(&context, request, &response));
  if (!status.ok()) return status;
  return response;
}

std::string ShortRpcReason(const grpc::Status& status, absl::Duration timeout) {
  const std::string& message = status.error_message();
  if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return absl::StrCat("no answer within ", absl::FormatDuration(timeout));
  }
  if (absl::StrContains(message, "Connection refused")) return "connection refused";
  if (absl::StrContains(message, "DNS resolution failed")) return "cannot resolve the host name";
  if (absl::StrContains(message, "No route to host")) return "no route to host";
  if (absl::StrContains(message, "Network is unreachable")) return "network is unreachable";

  // gRPC's message, on one line.
  std::string line;
  for (char c : message) {
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
    if (c == ' ' && (line.empty() || line.back() == ' ')) continue;
    line += c;
  }
  while (!line.empty() && line.back() == ' ') line.pop_back();
  constexpr size_t kMaxLength = 160;
  if (line.size() > kMaxLength) line = absl::StrCat(line.substr(0, kMaxLength - 3), "...");
  if (line.empty()) line = absl::StrCat("gRPC status ", static_cast<int>(status.error_code()));
  return line;
}

}  // namespace cli
}  // namespace reptrace
