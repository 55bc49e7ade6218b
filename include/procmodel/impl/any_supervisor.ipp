#pragma once

/// @file any_supervisor.ipp
/// any_supervisor's definitions: basic_supervisor<any_worker> behind a
/// pointer. Inline with the headers, or compiled once into the library.

#include "../supervisor.hpp"

namespace procmodel {

class any_supervisor::impl : public basic_supervisor<any_worker> {
 public:
  using basic_supervisor<any_worker>::basic_supervisor;
};

any_supervisor::any_supervisor(options opt, any_worker worker)
    : impl_(std::make_unique<impl>(std::move(opt), std::move(worker))) {}

any_supervisor::~any_supervisor() = default;

any_supervisor& any_supervisor::on_reload(reloader r) {
  impl_->on_reload(std::move(r));
  return *this;
}

any_supervisor& any_supervisor::add_helper(helper_process h) {
  impl_->add_helper(std::move(h));
  return *this;
}

int any_supervisor::run(int argc, const char* const* argv) { return impl_->run(argc, argv); }

int any_supervisor::run() { return impl_->run(); }

const options& any_supervisor::opts() const noexcept { return impl_->opts(); }

}  // namespace procmodel
