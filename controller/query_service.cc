#include "controller/query_service.h"

#include <utility>

#include "common/ids.h"
#include "controller/internal/grpc_status.h"

namespace reptrace::controller {

using internal::ToGrpcStatus;

grpc::Status QueryService::ListTraces(grpc::ServerContext*,
                                      const v1::ListTracesRequest* request,
                                      v1::ListTracesResponse* response) {
  auto traces = store_.ListTraces(request->service(), request->limit());
  if (!traces.ok()) return ToGrpcStatus(traces.status());
  for (v1::TraceSummary& trace : *traces) *response->add_traces() = std::move(trace);
  return grpc::Status::OK;
}

grpc::Status QueryService::GetTrace(grpc::ServerContext*, const v1::GetTraceRequest* request,
                                    v1::Trace* response) {
  auto id = ParseId(request->trace_id());
  if (!id.ok()) return ToGrpcStatus(id.status());
  auto trace = store_.GetTrace(*id);
  if (!trace.ok()) return ToGrpcStatus(trace.status());
  *response = std::move(*trace);
  return grpc::Status::OK;
}

grpc::Status QueryService::ListAgents(grpc::ServerContext*, const v1::ListAgentsRequest*,
                                      v1::ListAgentsResponse* response) {
  auto agents = store_.ListAgents();
  if (!agents.ok()) return ToGrpcStatus(agents.status());
  for (v1::AgentInfo& agent : *agents) *response->add_agents() = std::move(agent);
  return grpc::Status::OK;
}

grpc::Status QueryService::GetStats(grpc::ServerContext*, const v1::GetStatsRequest*,
                                    v1::GetStatsResponse* response) {
  auto stats = store_.GetStats();
  if (!stats.ok()) return ToGrpcStatus(stats.status());
  *response = std::move(*stats);
  return grpc::Status::OK;
}

}  // namespace reptrace::controller
