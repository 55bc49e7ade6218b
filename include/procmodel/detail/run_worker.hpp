#pragma once

/// @file run_worker.hpp
/// The runtime around a Worker: its loop, its channel to the master, the
/// signals sent to it directly, and the teardown order that keeps the
/// documented lifetimes safe.

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <span>
#include <utility>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include "../channel.hpp"
#include "../signals.hpp"
#include "../worker_context.hpp"
#include "signal_fd.hpp"

namespace procmodel {
namespace detail {

/// A worker's io_context whose pending handlers can be destroyed on demand,
/// while its services (and so every I/O object) still work.
class worker_loop : public boost::asio::io_context {
 public:
  using boost::asio::io_context::io_context;
  /// Destroys every handler not yet run; services stay until the destructor.
  using boost::asio::io_context::shutdown;
};

/// Runs a Worker in this process or thread until it stops; returns its exit code.
/// Each worker gets its own copy of `prototype`. Teardown follows Asio's
/// rules in three steps: the loop's pending handlers are destroyed first
/// (they may own connections that refer to the worker and its context), then
/// the worker copy and the context (which may own acceptors and timers), and
/// the loop's services last, once no I/O object is left to use them.
template <class Signals, class Worker>
int run_worker(const Worker& prototype, channel ch, worker_context::setup setup, bool own_signals,
               const std::function<void(boost::asio::io_context*)>& attach) {
  worker_loop io(1);
  attach(&io);
  struct detach_guard {
    const std::function<void(boost::asio::io_context*)>& attach;
    ~detach_guard() { attach(nullptr); }
  } detach{attach};
  worker_context ctx(io, std::move(ch), std::move(setup));
  Worker worker = prototype;  // after ctx: what it owns may refer to ctx

  // Commands from the master; end-of-file means the master is gone.
  boost::asio::posix::stream_descriptor chan(io, ctx.master_channel().fd());
  std::function<void()> watch_channel = [&] {
    chan.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                    [&](boost::system::error_code ec) {
                      if (ec) return;
                      message m;
                      for (;;) {
                        auto st = ctx.master_channel().receive(m);
                        if (st == receive_status::would_block) break;
                        if (st != receive_status::received) {
                          ctx.drain(drain_reason::master_lost, ctx.orphan_timeout());
                          return;  // stop watching a dead channel
                        }
                        switch (m.type) {
                          case message_type::quit:
                            ctx.drain(drain_reason::quit, milliseconds(std::max<std::int64_t>(m.argument, 0)));
                            break;
                          case message_type::terminate: ctx.stop(0); return;
                          case message_type::reopen: ctx.reopen(); break;
                          default: break;
                        }
                      }
                      if (!ctx.stopped()) watch_channel();
                    });
  };
  watch_channel();

  // Signals sent to the worker directly (a forked worker only). Handlers and
  // a pipe, not a signalfd: the mask is left empty for programs the worker starts.
  std::unique_ptr<signal_pipe> sigs;
  std::unique_ptr<boost::asio::posix::stream_descriptor> sig_desc;
  std::function<void()> watch_signals = [&] {
    sig_desc->async_wait(boost::asio::posix::stream_descriptor::wait_read,
                         [&](boost::system::error_code ec) {
                           if (ec) return;
                           int signo = 0;
                           while (sigs->read(signo)) {
                             switch (Signals::worker(signo)) {
                               case worker_reaction::terminate: ctx.stop(0); return;
                               case worker_reaction::drain:
                                 ctx.drain(drain_reason::signal, ctx.shutdown_timeout());
                                 break;
                               case worker_reaction::reopen: ctx.reopen(); break;
                               case worker_reaction::ignore: break;
                             }
                           }
                           watch_signals();
                         });
  };
  if (own_signals) {
    sigs = std::make_unique<signal_pipe>(std::span<const int>(Signals::watched));
    sig_desc = std::make_unique<boost::asio::posix::stream_descriptor>(io, sigs->fd());
    watch_signals();
  }

  int code = 0;
  try {
    worker(ctx);
    ctx.start_heartbeat();  // from the loop: a stuck loop sends none
    if (!ctx.stopped()) io.run();
    code = ctx.exit_code();
  } catch (const std::exception& e) {
    ctx.log().error("worker failed: {}", e.what());
    code = 1;
  }
  // The descriptors belong to the channel and the signal pipe, not to asio.
  chan.release();
  if (sig_desc) sig_desc->release();
  io.shutdown();  // handlers go while what they refer to lives
  return code;    // then the worker copy, ctx, and the loop's services, in that order
}

}  // namespace detail
}  // namespace procmodel
