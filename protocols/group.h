// Groups: state shared by the live connections of one client, or of one virtual
// connection made of several TCP connections (RPC over HTTP's IN and OUT channels,
// the SMB2 connections of one session), found by a key.
//
// A module's BoxModule owns a Groups<Key, Group>; each connection's Module joins
// the group of its key (in OnNewConnection or once its first bytes name the key)
// and keeps the shared_ptr until OnClose. The group is made by the first connection
// that joins and destroyed when the last one lets go of it, so a group lives as long
// as some connection uses it (or, a moment longer, the status page reading it:
// Live) and nothing has to expire it.
//
// Threading: Join, size and Live are thread-safe (connections of one client may run on
// different event loops). The Group object itself is shared by those threads: its
// own methods must be thread-safe (a mutex inside it), and it must not keep a
// ModuleContext or call into a connection's chain, whose calls belong to that
// connection's thread (a connection reads the group's state from its own calls,
// e.g. in OnData or a timer of its own).
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace wanopt::protocols {

template <class Key, class Group>
class Groups {
 public:
  Groups() : state_(std::make_shared<State>()) {}
  Groups(const Groups&) = delete;
  Groups& operator=(const Groups&) = delete;

  // The live group for `key`, or a new one from make() (which returns a
  // std::unique_ptr<Group>, and runs under the lock: keep it cheap, and do not call
  // Join from it). The group is destroyed when the last shared_ptr to it goes,
  // possibly after this Groups (it then only deletes itself).
  template <class Make>
  std::shared_ptr<Group> Join(const Key& key, Make make) {
    std::lock_guard lock(state_->mutex);
    auto it = state_->live.find(key);
    if (it != state_->live.end()) {
      if (auto group = it->second.lock()) return group;
    }
    std::weak_ptr<State> state = state_;
    std::shared_ptr<Group> group(make().release(), [state, key](Group* dying) {
      // Forget the key unless a newer group took it between the last release and
      // this deleter (Join found the weak_ptr expired and replaced it).
      if (auto s = state.lock()) {
        std::lock_guard lock(s->mutex);
        auto at = s->live.find(key);
        if (at != s->live.end() && at->second.expired()) s->live.erase(at);
      }
      delete dying;
    });
    state_->live[key] = group;
    return group;
  }

  // Groups alive now.
  size_t size() const {
    std::lock_guard lock(state_->mutex);
    return state_->live.size();
  }

  // Up to `max` of the groups alive now, in key order (for the status page). The
  // caller's references keep them alive; dropping them may destroy one.
  std::vector<std::shared_ptr<Group>> Live(size_t max) const {
    // Weak references under the lock, strong ones after it: a group whose last
    // strong reference is dropped here runs its deleter, which takes the lock.
    std::vector<std::weak_ptr<Group>> weak;
    {
      std::lock_guard lock(state_->mutex);
      for (const auto& [key, w] : state_->live) {
        if (weak.size() == max) break;
        weak.push_back(w);
      }
    }
    std::vector<std::shared_ptr<Group>> out;
    for (const auto& w : weak) {
      if (auto group = w.lock()) out.push_back(std::move(group));
    }
    return out;
  }

 private:
  struct State {
    mutable std::mutex mutex;
    std::map<Key, std::weak_ptr<Group>> live;
  };
  std::shared_ptr<State> state_;
};

}  // namespace wanopt::protocols
