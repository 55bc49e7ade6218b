#pragma once

/// @file connections.ipp
/// connection_set's and connection's definitions: inline with the headers,
/// or compiled once into the library (PROCMODEL_SEPARATE_COMPILATION).

#include <memory>
#include <utility>

#include "../connections.hpp"

namespace procmodel {

void connection::on_close(std::function<void()> close) {
  if (node_) node_->close = std::move(close);
}

void connection::idle() {
  if (!node_) return;
  node_->idle = true;
  if (set_->past_deadline_) connection_set::close(*node_);
}

void connection::leave() noexcept {
  if (!node_) return;
  node_->unlink();
  --set_->size_;
  node_.reset();  // releases the guard: the drain may end here
  set_.reset();
}

std::shared_ptr<connection_set> connection_set::create(worker_context& ctx) {
  auto set = std::make_shared<connection_set>(token{}, ctx);
  if (ctx.draining()) {
    set->drain(ctx.deadline());
  } else {
    ctx.on_drain([weak = std::weak_ptr<connection_set>(set)](steady_clock::time_point deadline) {
      if (auto s = weak.lock()) s->drain(deadline);
    });
  }
  return set;
}

connection_set::connection_set(token, worker_context& ctx) : ctx_(ctx), deadline_timer_(ctx.loop()) {}

connection_set::~connection_set() = default;

connection connection_set::join() {
  auto node = std::make_unique<detail::connection_node>();
  node->guard = ctx_.track();
  node->link_before(members_);
  ++size_;
  return connection(shared_from_this(), std::move(node));
}

void connection_set::close_idle() {
  auto keep = shared_from_this();  // a close action may drop the last connection
  detail::list_hook chosen;
  for (detail::list_hook* h = members_.next; h != &members_;) {
    auto* n = static_cast<detail::connection_node*>(h);
    h = h->next;
    if (n->idle) n->link_before(chosen);
  }
  // One at a time: a close action may end other connections too.
  while (!chosen.empty()) {
    auto* n = static_cast<detail::connection_node*>(chosen.next);
    n->link_before(members_);
    close(*n);
  }
}

void connection_set::drain(steady_clock::time_point deadline) {
  deadline_timer_.expires_at(deadline);
  deadline_timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
    if (ec) return;
    self->past_deadline_ = true;
    self->close_idle();
  });
}

void connection_set::close(detail::connection_node& n) {
  if (!n.close) return;
  auto f = n.close;  // the call may destroy the node
  f();
}

}  // namespace procmodel
