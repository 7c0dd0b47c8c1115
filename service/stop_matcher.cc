#include "service/stop_matcher.h"

#include <algorithm>

namespace qwen::service {

StopMatcher::StopMatcher(std::vector<std::string> stops) {
  for (std::string& s : stops) {
    if (s.empty()) continue;
    max_len_ = std::max(max_len_, s.size());
    stops_.push_back(std::move(s));
  }
}

StopMatcher::Result StopMatcher::Add(absl::string_view piece) {
  Result r;
  if (stopped_) return r;
  if (stops_.empty()) {
    r.text = std::string(piece);
    return r;
  }
  // A match can only start in the held tail or in the new piece, and the held tail is shorter
  // than the longest stop string, so searching held_ + piece is searching everything new.
  held_.append(piece.data(), piece.size());
  size_t best = std::string::npos;
  const std::string* best_stop = nullptr;
  for (const std::string& s : stops_) {
    const size_t at = held_.find(s);
    if (at < best) {
      best = at;
      best_stop = &s;
    }
  }
  if (best_stop != nullptr) {
    r.text = held_.substr(0, best);
    r.stopped = true;
    r.matched = *best_stop;
    stopped_ = true;
    held_.clear();
    return r;
  }
  // Hold back the longest tail that some stop string starts with.
  size_t keep = 0;
  const size_t limit = std::min(held_.size(), max_len_ - 1);
  for (size_t n = limit; n > 0; --n) {
    const absl::string_view tail = absl::string_view(held_).substr(held_.size() - n);
    const bool is_prefix = std::any_of(stops_.begin(), stops_.end(), [&](const std::string& s) {
      return s.size() > n && absl::string_view(s).substr(0, n) == tail;
    });
    if (is_prefix) {
      keep = n;
      break;
    }
  }
  r.text = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return r;
}

std::string StopMatcher::Flush() {
  std::string out;
  if (!stopped_) out.swap(held_);
  held_.clear();
  return out;
}

}  // namespace qwen::service
