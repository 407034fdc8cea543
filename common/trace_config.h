// The effective values of a reptrace.v1.TraceConfig: what a field left out means.
//
// SetConfig replaces the whole document, so a field an operator leaves out must mean its
// default, not proto3's zero: tracing on, capture_bytes 128, every trace kept.
#ifndef REPTRACE_COMMON_TRACE_CONFIG_H_
#define REPTRACE_COMMON_TRACE_CONFIG_H_

#include <cstdint>

#include "proto/reptrace.pb.h"

namespace reptrace {

inline constexpr uint32_t kDefaultCaptureBytes = 128;

inline bool ConfigEnabled(const v1::TraceConfig& config) {
  return !config.has_enabled() || config.enabled();
}

inline uint32_t ConfigCaptureBytes(const v1::TraceConfig& config) {
  return config.has_capture_bytes() ? config.capture_bytes() : kDefaultCaptureBytes;
}

inline double SamplingProbability(const v1::TraceConfig& config) {
  return config.sampling().has_probability() ? config.sampling().probability() : 1.0;
}

}  // namespace reptrace

#endif  // REPTRACE_COMMON_TRACE_CONFIG_H_
