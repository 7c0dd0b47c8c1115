#include "service/dispatcher.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace qwen::service {

Dispatcher::Dispatcher(int n_workers, int queue_capacity)
    : capacity_(std::max(0, queue_capacity)), workers_(std::max(0, n_workers)) {}

namespace {

uint64_t Mix(uint64_t x) {  // splitmix64's finalizer
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

uint64_t Dispatcher::PromptAffinity(const int32_t* tokens, size_t n) {
  uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a over the token ids
  for (size_t i = 0; i < std::min<size_t>(n, kAffinityTokens); ++i) {
    h = (h ^ static_cast<uint32_t>(tokens[i])) * 0x100000001b3ULL;
  }
  return h == 0 ? 1 : h;
}

int Dispatcher::Preferred(uint64_t affinity, int n_workers,
                          const std::function<bool(int)>& eligible) {
  int best = -1;
  uint64_t best_score = 0;
  for (int k = 0; k < n_workers; ++k) {
    if (!eligible(k)) continue;
    const uint64_t score = Mix(affinity ^ Mix(static_cast<uint64_t>(k)));
    if (best < 0 || score > best_score) {
      best = k;
      best_score = score;
    }
  }
  return best;
}

int Dispatcher::LiveLocked() const {
  return static_cast<int>(
      std::count_if(workers_.begin(), workers_.end(), [](const Worker& w) { return w.live; }));
}

std::vector<Dispatcher::Assignment> Dispatcher::AssignLocked() {
  std::vector<Assignment> out;
  for (auto it = queue_.begin(); it != queue_.end();) {
    int best = -1;
    for (int k = 0; k < static_cast<int>(workers_.size()); ++k) {
      const Worker& w = workers_[k];
      if (!w.live || w.busy >= w.slots) continue;
      const WorkerRef ref{k, w.epoch};
      if (std::find(it->exclude.begin(), it->exclude.end(), ref) != it->exclude.end()) continue;
      if (best < 0 || w.busy < workers_[best].busy) best = k;
    }
    if (best >= 0 && it->affinity != 0) {
      // The preferred worker among the live ones this job may use, when it has room.
      const int preferred = Preferred(it->affinity, static_cast<int>(workers_.size()), [&](int k) {
        const Worker& w = workers_[k];
        return w.live && std::find(it->exclude.begin(), it->exclude.end(), WorkerRef{k, w.epoch}) ==
                             it->exclude.end();
      });
      if (preferred >= 0 && workers_[preferred].busy < workers_[preferred].slots) best = preferred;
    }
    if (best < 0) {
      // No slot for this one (all busy, or only workers that failed it have room): a later job
      // may still fit elsewhere. Stop early when nothing at all is free.
      const bool any_free = std::any_of(workers_.begin(), workers_.end(),
                                        [](const Worker& w) { return w.live && w.busy < w.slots; });
      if (!any_free) break;
      ++it;
      continue;
    }
    ++workers_[best].busy;
    out.emplace_back(std::move(*it), WorkerRef{best, workers_[best].epoch});
    it = queue_.erase(it);
  }
  return out;
}

void Dispatcher::Run(std::vector<Assignment> assignments) {
  for (Assignment& a : assignments) a.first.start(a.second);
}

absl::Status Dispatcher::Submit(Job job) {
  std::vector<Assignment> started;
  bool refused = false;
  {
    absl::MutexLock lock(&mu_);
    if (LiveLocked() == 0) return absl::UnavailableError("no worker is up to serve the request");
    const uint64_t id = job.id;
    queue_.push_back(std::move(job));
    started = AssignLocked();
    // Still waiting with no room to wait: refuse it. It is the last one (it came last and
    // assignment only removes jobs).
    if (static_cast<int>(queue_.size()) > capacity_ && !queue_.empty() && queue_.back().id == id) {
      queue_.pop_back();
      refused = true;
    }
  }
  Run(std::move(started));
  if (refused) {
    return absl::ResourceExhaustedError(absl::StrCat("the request queue is full (", capacity_,
                                                     " requests are waiting for a worker slot)"));
  }
  return absl::OkStatus();
}

absl::Status Dispatcher::Resubmit(Job job) {
  std::vector<Assignment> started;
  {
    absl::MutexLock lock(&mu_);
    if (LiveLocked() == 0) return absl::UnavailableError("no worker is up to serve the request");
    queue_.push_front(std::move(job));
    started = AssignLocked();
  }
  Run(std::move(started));
  return absl::OkStatus();
}

bool Dispatcher::Cancel(uint64_t id) {
  absl::MutexLock lock(&mu_);
  auto it = std::find_if(queue_.begin(), queue_.end(), [id](const Job& j) { return j.id == id; });
  if (it == queue_.end()) return false;
  queue_.erase(it);
  return true;
}

void Dispatcher::Release(WorkerRef worker) {
  std::vector<Assignment> started;
  {
    absl::MutexLock lock(&mu_);
    if (worker.index < 0 || worker.index >= static_cast<int>(workers_.size())) return;
    Worker& w = workers_[worker.index];
    if (!w.live || w.epoch != worker.epoch || w.busy == 0) return;
    --w.busy;
    started = AssignLocked();
  }
  Run(std::move(started));
}

void Dispatcher::WorkerUp(int index, uint64_t epoch, int slots) {
  std::vector<Assignment> started;
  {
    absl::MutexLock lock(&mu_);
    if (index < 0 || index >= static_cast<int>(workers_.size())) return;
    workers_[index] = Worker{true, epoch, std::max(0, slots), 0};
    started = AssignLocked();
  }
  Run(std::move(started));
}

void Dispatcher::WorkerDown(int index) {
  std::deque<Job> failed;
  {
    absl::MutexLock lock(&mu_);
    if (index < 0 || index >= static_cast<int>(workers_.size())) return;
    Worker& w = workers_[index];
    w.live = false;
    w.busy = 0;
    w.slots = 0;
    if (LiveLocked() == 0) failed.swap(queue_);
  }
  for (Job& j : failed) {
    j.fail(absl::UnavailableError("no worker is up to serve the request (the last one went down)"));
  }
}

Dispatcher::Stats Dispatcher::GetStats() const {
  absl::MutexLock lock(&mu_);
  Stats s;
  s.queued = static_cast<int>(queue_.size());
  s.queue_capacity = capacity_;
  for (const Worker& w : workers_) {
    s.workers.push_back({w.live, w.epoch, w.slots, w.busy});
    if (!w.live) continue;
    ++s.live_workers;
    s.total_slots += w.slots;
    s.busy_slots += w.busy;
  }
  return s;
}

}  // namespace qwen::service
