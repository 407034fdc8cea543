// reptrace.v1.QueryService: traces, agents and stats, straight from the Store.
#ifndef REPTRACE_CONTROLLER_QUERY_SERVICE_H_
#define REPTRACE_CONTROLLER_QUERY_SERVICE_H_

#include "controller/store.h"
#include "proto/reptrace.grpc.pb.h"

namespace reptrace::controller {

class QueryService final : public v1::QueryService::Service {
 public:
  explicit QueryService(Store& store) : store_(store) {}

  grpc::Status ListTraces(grpc::ServerContext* context, const v1::ListTracesRequest* request,
                          v1::ListTracesResponse* response) override;
  // INVALID_ARGUMENT for an id that is not 1 to 16 hex digits, NOT_FOUND if unknown.
  grpc::Status GetTrace(grpc::ServerContext* context, const v1::GetTraceRequest* request,
                        v1::Trace* response) override;
  grpc::Status ListAgents(grpc::ServerContext* context, const v1::ListAgentsRequest* request,
                          v1::ListAgentsResponse* response) override;
  grpc::Status GetStats(grpc::ServerContext* context, const v1::GetStatsRequest* request,
                        v1::GetStatsResponse* response) override;

 private:
  Store& store_;
};

}  // namespace reptrace::controller

#endif  // REPTRACE_CONTROLLER_QUERY_SERVICE_H_
