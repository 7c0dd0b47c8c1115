// Names of qwen.v1 enum values as logs, metrics and `qwen client` print them. Header-only so
// that the client library, which does not link the service, shares them.
#ifndef QWEN_SERVICE_API_NAMES_H_
#define QWEN_SERVICE_API_NAMES_H_

#include "qwen/v1/qwen.pb.h"

namespace qwen::service {

// FINISH_REASON_EOS -> "eos" (the `reason` label of qwen_generate_finish_total).
inline const char* FinishReasonName(v1::FinishReason r) {
  switch (r) {
    case v1::FINISH_REASON_EOS:
      return "eos";
    case v1::FINISH_REASON_LENGTH:
      return "length";
    case v1::FINISH_REASON_STOP_SEQUENCE:
      return "stop_sequence";
    case v1::FINISH_REASON_STOP_TOKEN:
      return "stop_token";
    case v1::FINISH_REASON_TOOL_CALLS:
      return "tool_calls";
    case v1::FINISH_REASON_CANCELLED:
      return "cancelled";
    case v1::FINISH_REASON_DEADLINE_EXCEEDED:
      return "deadline_exceeded";
    default:
      return "unspecified";
  }
}

}  // namespace qwen::service

#endif  // QWEN_SERVICE_API_NAMES_H_
