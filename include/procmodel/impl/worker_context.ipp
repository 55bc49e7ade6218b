#pragma once

/// @file worker_context.ipp
/// worker_context's definitions: inline with the headers, or compiled once
/// into the library (PROCMODEL_SEPARATE_COMPILATION).

#include <algorithm>
#include <stdexcept>

#include <fcntl.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <fmt/core.h>

#include "../worker_context.hpp"

namespace procmodel {

void connection_guard::release() noexcept {
  if (auto s = std::move(state_); s && s->owner) s->owner->untrack();
}

int worker_context::duplicate_listener(std::string_view call, std::size_t i) {
  if (i >= listeners_.size())
    throw std::logic_error(fmt::format(
        "{}({}): this worker has {} listener(s); give the master an address to listen "
        "on (options::listen or --listen HOST:PORT, or socket activation)",
        call, i, listeners_.size()));
  const listener& l = listeners_[i];
  std::string_view fits = l.datagram() ? "datagram_socket" : l.family == AF_UNIX ? "local_acceptor" : "acceptor";
  if (call != fits)
    throw std::logic_error(fmt::format("{}({}): listener {} is {}; use {}({})", call, i, i,
                                       l.local, fits, i));
  if (l.fd < 0)
    throw std::logic_error(fmt::format("{}({}): the listeners are gone (draining)", call, i));
  int fd = ::fcntl(l.fd, F_DUPFD_CLOEXEC, 3);
  if (fd < 0) detail::throw_errno("dup listener");
  return fd;
}

boost::asio::ip::tcp::acceptor worker_context::acceptor(std::size_t i) {
  int fd = duplicate_listener("acceptor", i);
  auto protocol =
      listeners_[i].family == AF_INET6 ? boost::asio::ip::tcp::v6() : boost::asio::ip::tcp::v4();
  boost::asio::ip::tcp::acceptor a(io_);
  a.assign(protocol, fd);
  a.non_blocking(true);
  return a;
}

boost::asio::local::stream_protocol::acceptor worker_context::local_acceptor(std::size_t i) {
  int fd = duplicate_listener("local_acceptor", i);
  boost::asio::local::stream_protocol::acceptor a(io_);
  a.assign(boost::asio::local::stream_protocol(), fd);
  a.non_blocking(true);
  return a;
}

boost::asio::ip::udp::socket worker_context::datagram_socket(std::size_t i) {
  int fd = duplicate_listener("datagram_socket", i);
  auto protocol =
      listeners_[i].family == AF_INET6 ? boost::asio::ip::udp::v6() : boost::asio::ip::udp::v4();
  boost::asio::ip::udp::socket s(io_);
  s.assign(protocol, fd);
  s.non_blocking(true);
  return s;
}

void worker_context::ready() {
  if (ready_sent_) return;
  ready_sent_ = true;
  channel_.send({message_type::ready, 0});
}

void worker_context::drain(drain_reason why, milliseconds within) {
  if (stopped_) return;
  if (draining_) {
    if (why == drain_reason::master_lost) hasten(within);
    return;
  }
  draining_ = true;
  drain_reason_ = why;
  auto now = steady_clock::now();
  milliseconds margin = margin_of(within);
  deadline_ = now + within - margin;
  // No freeze here, even with the master gone: after an upgrade another
  // master may serve from the same sockets, and a filter would starve it.
  log_.info("draining ({}), deadline in {} ms", why == drain_reason::quit ? "asked by master"
                                                : why == drain_reason::signal ? "a signal to the worker"
                                                                              : "master is gone",
            (within - margin).count());
  for (auto& h : drain_handlers_) h(deadline_);
  release_listeners();  // not handed out again
  arm_hard_stop(now + within - margin / 2);
  boost::asio::post(io_, [this] { maybe_finish(); });
}

void worker_context::reopen() {
  log_.reopen();
  for (auto& h : reopen_handlers_) h();
}

worker_context::worker_context(boost::asio::io_context& io, channel ch, setup s)
    : io_(io),
      channel_(std::move(ch)),
      listeners_(std::move(s.listeners)),
      slot_(s.slot),
      generation_(s.generation),
      owns_listeners_(s.owns_listeners),
      shutdown_timeout_(s.shutdown_timeout),
      orphan_timeout_(s.orphan_timeout),
      hard_stop_(io),
      heartbeat_interval_(s.heartbeat_interval),
      heartbeat_(io),
      report_every_(s.report_every) {
  tracker_->owner = this;
  log_.set_level(s.level);
  log_.set_role(fmt::format("worker {}", slot_));
  if (s.log_file.empty()) return;
  try {
    log_.open(s.log_file);
  } catch (...) {
    release_listeners();  // no destructor runs
    throw;
  }
}

worker_context::~worker_context() {
  tracker_->owner = nullptr;
  release_listeners();  // stopped without a drain
}

void worker_context::release_listeners() noexcept {
  // The worker's own copies are closed (and the numbers reused); a test's
  // may belong to someone else (setup::owns_listeners).
  for (auto& l : listeners_) {
    if (owns_listeners_ && l.fd >= 0) ::close(l.fd);
    l.fd = -1;
  }
  owns_listeners_ = false;
}

void worker_context::untrack() noexcept {
  if (live_ > 0) --live_;
  if (draining_ && live_ == 0) boost::asio::post(io_, [this] { maybe_finish(); });
}

void worker_context::arm_hard_stop(steady_clock::time_point at) {
  hard_stop_.expires_at(at);  // cancels a wait for an earlier setting
  hard_stop_.async_wait([this](boost::system::error_code ec) {
    if (ec) return;
    log_.warn("drain deadline reached with {} connection(s) open; exiting", live_);
    stop(0);
  });
}

void worker_context::hasten(milliseconds within) {
  auto now = steady_clock::now();
  milliseconds margin = margin_of(within);
  if (now + within - margin / 2 >= hard_stop_.expiry()) return;
  deadline_ = std::min(deadline_, now + within - margin);
  log_.info("master is gone while draining; deadline in {} ms", (within - margin).count());
  drain_reason_ = drain_reason::master_lost;
  arm_hard_stop(now + within - margin / 2);
}

void worker_context::start_heartbeat() {
  if (heartbeat_interval_.count() <= 0 || stopped_) return;
  channel_.send({message_type::heartbeat, 0});
  // Unreported work goes with it: a slow trickle still reaches the limit.
  if (report_every_ != 0 && served_ != reported_) report_served();
  heartbeat_.expires_after(heartbeat_interval_);
  heartbeat_.async_wait([this](boost::system::error_code ec) {
    if (!ec) start_heartbeat();
  });
}

void worker_context::report_served() {
  if (channel_.send({message_type::served, static_cast<std::int64_t>(served_)})) reported_ = served_;
}

void worker_context::maybe_finish() {
  if (draining_ && live_ == 0 && !stopped_) {
    log_.info("drained; exiting");
    stop(0);
  }
}

}  // namespace procmodel
