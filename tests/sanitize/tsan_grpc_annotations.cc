// ThreadSanitizer annotations for Debian's gRPC.
//
// Debian's libgrpc is built without -fsanitize=thread. gRPC's C++ API is largely header code
// that is compiled into our (instrumented) executables: a reactor's StartWrite fills a CallOpSet
// and hands it to the core with grpc_call_start_batch on one thread, and the batch's completion
// runs the same CallOpSet (FinishOp, the interceptor hooks) and then our reactor's OnWriteDone on
// another thread, which took the event from grpc_completion_queue_next. The hand-over between the
// two is inside libgrpc, where TSan cannot see it, so TSan reported every such pair as a race.
//
// The TSan build (-DQWEN_SANITIZE=thread) links this file into every executable. Its definitions
// of the functions below take precedence over libgrpc's (an executable's symbols come
// first, also for libgrpc++'s calls through its PLT); each calls the real function, found with
// dlsym(RTLD_NEXT), and tells TSan what gRPC guarantees: everything a thread did before it
// started a batch (or asked a server for a call) happens before the completion is delivered with
// the same tag.
//
// This adds only the ordering gRPC documents for its completion queues; races between our own
// threads that gRPC does not order (a reactor's state touched from a worker callback without our
// lock, say) are still reported.
#include <grpc/grpc.h>
#include <sanitizer/tsan_interface.h>

#include "grpcpp/server.h"
#include "tests/sanitize/next_symbol.h"

namespace {

using qwen::sanitize::NextSymbol;

// Every call's last reference is dropped before a server's Wait() returns (its shutdown waits for
// them); a call's handler state is torn down just before that, on whichever gRPC thread ran the
// call's end, and the hand-over to the thread in Wait() passes through libgrpc++'s own counters.
char calls_released;

void AcquireCompleted(const grpc_event& ev) {
  if (ev.type == GRPC_OP_COMPLETE && ev.tag != nullptr) __tsan_acquire(ev.tag);
}

}  // namespace

extern "C" {

grpc_call_error grpc_call_start_batch(grpc_call* call, const grpc_op* ops, size_t nops, void* tag,
                                      void* reserved) {
  using Fn = grpc_call_error (*)(grpc_call*, const grpc_op*, size_t, void*, void*);
  static Fn slot = nullptr;
  if (tag != nullptr) __tsan_release(tag);
  return NextSymbol(&slot, "grpc_call_start_batch")(call, ops, nops, tag, reserved);
}

// A server asks for the next incoming call with a tag of its own; the call's arrival is delivered
// with that tag, to a thread that then runs the call's handler and interceptors on objects the
// asking thread made.
grpc_call_error grpc_server_request_call(grpc_server* server, grpc_call** call,
                                         grpc_call_details* details,
                                         grpc_metadata_array* request_metadata,
                                         grpc_completion_queue* cq_bound_to_call,
                                         grpc_completion_queue* cq_for_notification,
                                         void* tag_new) {
  using Fn =
      grpc_call_error (*)(grpc_server*, grpc_call**, grpc_call_details*, grpc_metadata_array*,
                          grpc_completion_queue*, grpc_completion_queue*, void*);
  static Fn slot = nullptr;
  if (tag_new != nullptr) __tsan_release(tag_new);
  return NextSymbol(&slot, "grpc_server_request_call")(
      server, call, details, request_metadata, cq_bound_to_call, cq_for_notification, tag_new);
}

grpc_call_error grpc_server_request_registered_call(grpc_server* server, void* registered_method,
                                                    grpc_call** call, gpr_timespec* deadline,
                                                    grpc_metadata_array* request_metadata,
                                                    grpc_byte_buffer** optional_payload,
                                                    grpc_completion_queue* cq_bound_to_call,
                                                    grpc_completion_queue* cq_for_notification,
                                                    void* tag_new) {
  using Fn = grpc_call_error (*)(grpc_server*, void*, grpc_call**, gpr_timespec*,
                                 grpc_metadata_array*, grpc_byte_buffer**, grpc_completion_queue*,
                                 grpc_completion_queue*, void*);
  static Fn slot = nullptr;
  if (tag_new != nullptr) __tsan_release(tag_new);
  return NextSymbol(&slot, "grpc_server_request_registered_call")(
      server, registered_method, call, deadline, request_metadata, optional_payload,
      cq_bound_to_call, cq_for_notification, tag_new);
}

void grpc_call_unref(grpc_call* call) {
  using Fn = void (*)(grpc_call*);
  static Fn slot = nullptr;
  __tsan_release(&calls_released);
  NextSymbol(&slot, "grpc_call_unref")(call);
}

grpc_event grpc_completion_queue_next(grpc_completion_queue* cq, gpr_timespec deadline,
                                      void* reserved) {
  using Fn = grpc_event (*)(grpc_completion_queue*, gpr_timespec, void*);
  static Fn slot = nullptr;
  const grpc_event ev = NextSymbol(&slot, "grpc_completion_queue_next")(cq, deadline, reserved);
  AcquireCompleted(ev);
  return ev;
}

grpc_event grpc_completion_queue_pluck(grpc_completion_queue* cq, void* tag, gpr_timespec deadline,
                                       void* reserved) {
  using Fn = grpc_event (*)(grpc_completion_queue*, void*, gpr_timespec, void*);
  static Fn slot = nullptr;
  const grpc_event ev =
      NextSymbol(&slot, "grpc_completion_queue_pluck")(cq, tag, deadline, reserved);
  AcquireCompleted(ev);
  return ev;
}

}  // extern "C"

void grpc::Server::Wait() {
  using Fn = void (*)(grpc::Server*);
  static Fn slot = nullptr;
  NextSymbol(&slot, "_ZN4grpc6Server4WaitEv")(this);
  __tsan_acquire(&calls_released);
}
