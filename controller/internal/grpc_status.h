// absl::Status -> grpc::Status at the RPC boundary (the numeric codes are the same).
#ifndef REPTRACE_CONTROLLER_INTERNAL_GRPC_STATUS_H_
#define REPTRACE_CONTROLLER_INTERNAL_GRPC_STATUS_H_

#include <string>

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace reptrace::controller::internal {

inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

}  // namespace reptrace::controller::internal

#endif  // REPTRACE_CONTROLLER_INTERNAL_GRPC_STATUS_H_
