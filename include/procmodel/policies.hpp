#pragma once

/// @file policies.hpp
/// Policies named one at a time, in any order, with the defaults for the rest:
/// `use_spawner<S>`, `use_signals<S>`, `use_lifecycle<L>`, `use_loop<L>`
/// (Boost.Intrusive's option types). `supervisor_with<Worker, use_...>`
/// (supervisor.hpp) is the basic_supervisor they make.
///
/// @code
/// using sup = procmodel::supervisor_with<my_worker,
///                                        procmodel::use_signals<procmodel::graceful_term_signals>>;
/// // = basic_supervisor<my_worker, runtime_spawner, graceful_term_signals>
/// @endcode

#include <cstddef>
#include <type_traits>

#include "asio_loop.hpp"
#include "lifecycle.hpp"
#include "signals.hpp"
#include "spawner.hpp"

namespace procmodel {

/// Names the Spawner policy: how workers come to be (default: runtime_spawner).
template <class Spawner>
struct use_spawner {
  static_assert(detail::check_spawner_policy<Spawner>());
  using type = Spawner;
};

/// Names the Signals policy: which signal means which command (default: nginx_signals).
template <class Signals>
struct use_signals {
  static_assert(detail::check_signals_policy<Signals>());
  using type = Signals;
};

/// Names the Lifecycle policy: the state machine (default: nginx_lifecycle).
template <class Lifecycle>
struct use_lifecycle {
  static_assert(detail::check_lifecycle_policy<Lifecycle>());
  using type = Lifecycle;
};

/// Names the Loop policy: the master's reactor (default: asio_loop).
template <class Loop>
struct use_loop {
  static_assert(detail::check_loop_policy<Loop>());
  using type = Loop;
};

namespace detail {

template <template <class> class Kind, class Option>
struct is_option_of : std::false_type {};
template <template <class> class Kind, class Policy>
struct is_option_of<Kind, Kind<Policy>> : std::true_type {};

template <class Option>
inline constexpr bool is_policy_option =
    is_option_of<use_spawner, Option>::value || is_option_of<use_signals, Option>::value ||
    is_option_of<use_lifecycle, Option>::value || is_option_of<use_loop, Option>::value;

// Instantiated once per option, so that an error names the option at fault.
template <class Option>
struct check_policy_option {
  static_assert(is_policy_option<Option>,
                "procmodel::policies: each option must be use_spawner<S>, use_signals<S>, "
                "use_lifecycle<L> or use_loop<L>, not a policy on its own");
  static constexpr bool value = true;
};

template <template <class> class Kind, class... Options>
inline constexpr std::size_t count_options = (std::size_t{0} + ... + is_option_of<Kind, Options>::value);

// The policy the Kind option names, or Default.
template <template <class> class Kind, class Default, class... Options>
struct find_option {
  using type = Default;
};
template <template <class> class Kind, class Default, class First, class... Rest>
struct find_option<Kind, Default, First, Rest...> {
  using type = typename std::conditional_t<is_option_of<Kind, First>::value, First,
                                           find_option<Kind, Default, Rest...>>::type;
};

}  // namespace detail

/// The policy set the options name, each kind at most once, defaults for the rest.
template <class... Options>
struct policies {
  static_assert((detail::check_policy_option<Options>::value && ...));
  static_assert(detail::count_options<use_spawner, Options...> <= 1,
                "procmodel::policies: use_spawner<> given more than once");
  static_assert(detail::count_options<use_signals, Options...> <= 1,
                "procmodel::policies: use_signals<> given more than once");
  static_assert(detail::count_options<use_lifecycle, Options...> <= 1,
                "procmodel::policies: use_lifecycle<> given more than once");
  static_assert(detail::count_options<use_loop, Options...> <= 1,
                "procmodel::policies: use_loop<> given more than once");

  using spawner = typename detail::find_option<use_spawner, runtime_spawner, Options...>::type;
  using signals = typename detail::find_option<use_signals, nginx_signals, Options...>::type;
  using lifecycle = typename detail::find_option<use_lifecycle, nginx_lifecycle, Options...>::type;
  using loop = typename detail::find_option<use_loop, asio_loop, Options...>::type;
};

}  // namespace procmodel
