// Stopping on SIGINT/SIGTERM, the way `wanopt run` and `wanopt lab` both do.
//
// BlockStopSignals() must run before any thread starts (threads inherit the mask),
// so that only the thread calling WaitForStopSignal() takes them. It also ignores
// SIGPIPE: a peer that vanished is an error code on a socket, not a signal.
#pragma once

#include <csignal>

namespace wanopt {

inline sigset_t StopSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  return signals;
}

inline void BlockStopSignals() {
  sigset_t signals = StopSignals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
}

// Blocks until SIGINT or SIGTERM; returns which.
inline int WaitForStopSignal() {
  sigset_t signals = StopSignals();
  int received = 0;
  sigwait(&signals, &received);
  return received;
}

}  // namespace wanopt
