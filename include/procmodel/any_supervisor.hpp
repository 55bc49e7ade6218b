#pragma once

/// @file any_supervisor.hpp
/// The default supervisor with its Worker type-erased: a class, not a
/// template, so that it can be compiled once into the library.
///
/// With PROCMODEL_SEPARATE_COMPILATION, `procmodel.hpp` gives only this, the
/// options and the worker's view, and `supervisor<Worker>` is a thin wrapper
/// over `any_supervisor`: a server's own files build without the master's
/// code, which `<procmodel/src.hpp>` compiles once. Header-only programs can
/// use `any_supervisor` too, by including this header.

#include <functional>
#include <memory>
#include <type_traits>
#include <utility>

#include "detail/config.hpp"
#include "helper_process.hpp"
#include "options.hpp"
#include "worker_context.hpp"

namespace procmodel {

/// A Worker held by value behind `void(worker_context&)`; each worker runs
/// its own copy, so what it holds must be copyable.
using any_worker = std::function<void(worker_context&)>;

/// `basic_supervisor<any_worker>`: forked workers (threads with
/// `--single-process`), nginx's signals and lifecycle, Asio; the same flags, signals and behaviour as `supervisor<W>`.
class any_supervisor {
 public:
  /// Edits copies of the Worker and the options on reload (HUP), or throws to refuse it.
  using reloader = std::function<void(any_worker& next, options& next_options)>;

  PROCMODEL_DECL any_supervisor(options opt, any_worker worker);
  PROCMODEL_DECL ~any_supervisor();
  any_supervisor(const any_supervisor&) = delete;
  any_supervisor& operator=(const any_supervisor&) = delete;

  /// Sets what a reload re-reads (basic_supervisor::on_reload).
  PROCMODEL_DECL any_supervisor& on_reload(reloader r);
  /// Adds helper processes beside the workers (basic_supervisor::add_helper),
  /// with its checks. A helper's `run` is forked as a worker is; one that
  /// names only a program (`exec`) needs exec_spawner, so here, as under
  /// `basic_supervisor<W>`, it fails as it starts and is retried with backoff.
  PROCMODEL_DECL any_supervisor& add_helper(helper_process h);
  /// Parses the standard flags from argv over the options, then run().
  PROCMODEL_DECL int run(int argc, const char* const* argv);
  /// Runs the master until it stops; returns the process exit code.
  PROCMODEL_DECL int run();
  [[nodiscard]] PROCMODEL_DECL const options& opts() const noexcept;

 private:
  class impl;
  std::unique_ptr<impl> impl_;
};

#if defined(PROCMODEL_SEPARATE_COMPILATION)
/// The common case, separately compiled: `Worker` is copied into an
/// any_worker and run by the library's any_supervisor. The same interface
/// as `basic_supervisor<Worker>` for run(), on_reload(), add_helper() and opts().
template <class Worker>
class supervisor {
  static_assert(detail::check_worker<Worker>());

 public:
  /// Edits copies of the Worker and the options on reload (HUP), or throws to refuse it.
  using reloader = std::function<void(Worker& next, options& next_options)>;

  explicit supervisor(options opt, Worker worker = Worker{})
      : core_(std::move(opt), any_worker(std::move(worker))) {}

  supervisor& on_reload(reloader r) {
    core_.on_reload([r = std::move(r)](any_worker& next, options& next_options) {
      r(*next.template target<Worker>(), next_options);
    });
    return *this;
  }
  /// Adds helper processes beside the workers (basic_supervisor::add_helper).
  supervisor& add_helper(helper_process h) {
    core_.add_helper(std::move(h));
    return *this;
  }
  int run(int argc, const char* const* argv) { return core_.run(argc, argv); }
  int run() { return core_.run(); }
  [[nodiscard]] const options& opts() const noexcept { return core_.opts(); }

 private:
  any_supervisor core_;
};
#endif

}  // namespace procmodel

#if defined(PROCMODEL_HEADER_ONLY)
#include "impl/any_supervisor.ipp"
#endif
