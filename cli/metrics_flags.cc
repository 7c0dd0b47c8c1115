#include "cli/metrics_flags.h"

#include "absl/flags/flag.h"

ABSL_FLAG(int32_t, metrics_port, 9090,
          "TCP port of the Prometheus metrics (HTTP GET /metrics, on the --host address); 0 "
          "turns them off.");
