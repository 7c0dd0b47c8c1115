// Helpers of the observability and client e2e tests: a free port, an HTTP GET, the metrics text
// format, and running a program with given standard input.
#ifndef QWEN_TESTS_SERVICE_OPS_TEST_UTIL_H_
#define QWEN_TESTS_SERVICE_OPS_TEST_UTIL_H_

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "tests/common/test_util.h"

namespace qwen::testing {

// A TCP port on 127.0.0.1 that was free a moment ago.
inline int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

// The body of GET http://127.0.0.1:port/path ("" when the request failed).
inline std::string HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    close(fd);
    return "";
  }
  const std::string req = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
    close(fd);
    return "";
  }
  std::string resp;
  char buf[8192];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) resp.append(buf, static_cast<size_t>(n));
  close(fd);
  const size_t body = resp.find("\r\n\r\n");
  if (body == std::string::npos || resp.find(" 200 ") == std::string::npos) return "";
  return resp.substr(body + 4);
}

// One sample of the Prometheus text format.
struct MetricSample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

inline std::vector<MetricSample> ParseMetrics(const std::string& text) {
  std::vector<MetricSample> out;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (line.empty() || line[0] == '#') continue;
    MetricSample s;
    const size_t brace = line.find('{');
    const size_t space = line.rfind(' ');
    if (space == absl::string_view::npos) continue;
    if (brace != absl::string_view::npos && brace < space) {
      s.name = std::string(line.substr(0, brace));
      const size_t close = line.rfind('}');
      absl::string_view labels = line.substr(brace + 1, close - brace - 1);
      // Values in this project's metrics hold no commas or quotes.
      for (absl::string_view kv : absl::StrSplit(labels, ',', absl::SkipEmpty())) {
        const size_t eq = kv.find('=');
        std::string v(kv.substr(eq + 1));
        if (v.size() >= 2) v = v.substr(1, v.size() - 2);
        s.labels[std::string(kv.substr(0, eq))] = v;
      }
    } else {
      s.name = std::string(line.substr(0, space));
    }
    const std::string value(line.substr(space + 1));
    if (value == "+Inf") {
      s.value = 1e300;
    } else if (!absl::SimpleAtod(value, &s.value)) {
      continue;
    }
    out.push_back(std::move(s));
  }
  return out;
}

// The sum of the samples named `name` whose labels include `labels`; -1 when there is none.
inline double MetricValue(const std::vector<MetricSample>& samples, const std::string& name,
                          const std::map<std::string, std::string>& labels = {}) {
  double sum = 0;
  bool found = false;
  for (const MetricSample& s : samples) {
    if (s.name != name) continue;
    bool match = true;
    for (const auto& [k, v] : labels) {
      auto it = s.labels.find(k);
      if (it == s.labels.end() || it->second != v) match = false;
    }
    if (match) {
      sum += s.value;
      found = true;
    }
  }
  return found ? sum : -1;
}

struct ProcessResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs argv[0] (a path) with `input` on standard input and waits for it.
inline ProcessResult RunProcess(const std::vector<std::string>& args,
                                const std::string& input = "") {
  char in_path[] = "/tmp/qwen-ops-in-XXXXXX";
  char out_path[] = "/tmp/qwen-ops-out-XXXXXX";
  char err_path[] = "/tmp/qwen-ops-err-XXXXXX";
  const int in_fd = mkstemp(in_path);
  const int out_fd = mkstemp(out_path);
  const int err_fd = mkstemp(err_path);
  if (write(in_fd, input.data(), input.size()) != static_cast<ssize_t>(input.size())) {
    return {};
  }
  lseek(in_fd, 0, SEEK_SET);
  std::vector<std::string> copy = args;
  std::vector<char*> argv;
  for (std::string& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(in_fd, STDIN_FILENO);
    dup2(out_fd, STDOUT_FILENO);
    dup2(err_fd, STDERR_FILENO);
    execv(argv[0], argv.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  close(in_fd);
  close(out_fd);
  close(err_fd);
  ProcessResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = ReadFile(out_path);
  r.err = ReadFile(err_path);
  unlink(in_path);
  unlink(out_path);
  unlink(err_path);
  return r;
}

}  // namespace qwen::testing

#endif  // QWEN_TESTS_SERVICE_OPS_TEST_UTIL_H_
