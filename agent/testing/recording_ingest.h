// Test helper: a real IngestService on 127.0.0.1 that records what agents send.
#ifndef REPTRACE_AGENT_TESTING_RECORDING_INGEST_H_
#define REPTRACE_AGENT_TESTING_RECORDING_INGEST_H_

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "proto/reptrace.grpc.pb.h"

namespace reptrace::testing {

// Records every message; acknowledges batches if told to. Once set_config() is called,
// each stream is sent that config after its hello, as the controller does; PushConfig()
// sends one on the open streams. Writes are serialized (one at a time per stream).
class RecordingIngest final : public v1::IngestService::Service {
 public:
  using Stream = grpc::ServerReaderWriter<v1::ControllerMessage, v1::AgentMessage>;

  explicit RecordingIngest(bool ack) : ack_(ack) {}

  grpc::Status Connect(grpc::ServerContext* /*context*/, Stream* stream) override {
    v1::AgentMessage message;
    while (stream->Read(&message)) {
      {
        absl::MutexLock lock(&mu_);
        messages_.push_back(message);
        if (message.has_hello()) {
          streams_.push_back(stream);
          if (config_.version() != 0) {
            v1::ControllerMessage push;
            *push.mutable_config() = config_;
            if (!stream->Write(push)) break;
          }
        }
      }
      if (message.has_batch() && ack_) {
        v1::ControllerMessage ack;
        ack.mutable_ack()->set_batch_id(message.batch().batch_id());
        absl::MutexLock lock(&mu_);
        if (!stream->Write(ack)) break;
      }
    }
    absl::MutexLock lock(&mu_);
    streams_.erase(std::remove(streams_.begin(), streams_.end(), stream), streams_.end());
    return grpc::Status::OK;
  }

  // The config sent after each later hello.
  void set_config(const v1::ConfigVersion& config) {
    absl::MutexLock lock(&mu_);
    config_ = config;
  }
  // Sets the config and sends it on every open stream.
  void PushConfig(const v1::ConfigVersion& config) {
    absl::MutexLock lock(&mu_);
    config_ = config;
    v1::ControllerMessage push;
    *push.mutable_config() = config;
    for (Stream* stream : streams_) stream->Write(push);
  }

  std::vector<v1::AgentMessage> messages() const {
    absl::MutexLock lock(&mu_);
    return messages_;
  }
  std::vector<uint64_t> batch_ids() const {
    std::vector<uint64_t> ids;
    for (const auto& m : messages()) {
      if (m.has_batch()) ids.push_back(m.batch().batch_id());
    }
    return ids;
  }

 private:
  const bool ack_;
  mutable absl::Mutex mu_;
  std::vector<v1::AgentMessage> messages_ ABSL_GUARDED_BY(mu_);
  v1::ConfigVersion config_ ABSL_GUARDED_BY(mu_);
  std::vector<Stream*> streams_ ABSL_GUARDED_BY(mu_);
};

// The service in a server listening on 127.0.0.1:`port` (0: any free port).
class TestController {
 public:
  explicit TestController(bool ack, int port = 0) : service_(ack) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort(absl::StrCat("127.0.0.1:", port), grpc::InsecureServerCredentials(),
                             &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
  }
  ~TestController() { Shutdown(); }
  void Shutdown() {
    if (server_) server_->Shutdown(std::chrono::system_clock::now() +
                                   std::chrono::milliseconds(100));
    server_.reset();
  }
  bool started() const { return server_ != nullptr && port_ > 0; }
  int port() const { return port_; }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }
  const RecordingIngest& service() const { return service_; }
  RecordingIngest& service() { return service_; }

 private:
  RecordingIngest service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

}  // namespace reptrace::testing

#endif  // REPTRACE_AGENT_TESTING_RECORDING_INGEST_H_
