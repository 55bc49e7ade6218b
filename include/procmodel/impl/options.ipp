#pragma once

/// @file options.ipp
/// command_line's definitions: inline with the headers, or compiled once
/// into the library (PROCMODEL_SEPARATE_COMPILATION).

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <stdexcept>
#include <system_error>

#include <fmt/core.h>

#include "../options.hpp"

namespace procmodel {

long long parse_number(std::string_view what, std::string_view text, long long lo,
                              long long hi) {
  long long value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size() || value < lo || value > hi)
    throw std::invalid_argument(
        fmt::format("{}: expected a whole number from {} to {}, got '{}'", what, lo, hi, text));
  return value;
}

std::optional<command> parse_command(std::string_view name) {
  for (command c : {command::stop, command::quit, command::reload, command::reopen,
                    command::upgrade, command::drain_workers, command::add_worker,
                    command::remove_worker})
    if (to_string(c) == name) return c;
  return std::nullopt;
}

command_line::command_line(options& opt) : opt_(opt) {
  add("--listen", "HOST:PORT", "listen on this address; repeat for more", [this](auto v) {
    if (!listen_seen_) opt_.listen.clear();
    listen_seen_ = true;
    opt_.listen.emplace_back(v);
  });
  add("--workers", "N", "number of worker processes (default: CPU count)", [this](auto v) {
    opt_.workers = static_cast<unsigned>(parse_number("--workers", v, 1, 1024));
  });
  add("--pid-file", "PATH", "write the master's pid here", [this](auto v) { opt_.pid_file = v; });
  add("--log-file", "PATH", "log here instead of stderr", [this](auto v) { opt_.log_file = v; });
  add("--log-level", "LEVEL", "debug, info, notice, warn or error", [this](auto v) {
    for (auto l : {log_level::debug, log_level::info, log_level::notice, log_level::warn,
                   log_level::error})
      if (to_string(l) == v) return void(opt_.level = l);
    throw std::invalid_argument(fmt::format("--log-level: unknown level '{}'", v));
  });
  add("--shutdown-timeout", "MS", "graceful stop: kill workers still draining after MS",
      [this](auto v) {
        opt_.shutdown_timeout = milliseconds(parse_number("--shutdown-timeout", v, 0, 86'400'000));
      });
  add("--terminate-timeout", "MS", "fast stop: kill workers still running after MS",
      [this](auto v) {
        opt_.terminate_timeout =
            milliseconds(parse_number("--terminate-timeout", v, 0, 86'400'000));
      });
  add("--ready-timeout", "MS", "reload: roll back if new workers are not ready after MS",
      [this](auto v) {
        opt_.ready_timeout = milliseconds(parse_number("--ready-timeout", v, 1, 86'400'000));
      });
  add_flag("--reuseport", "one SO_REUSEPORT socket per worker instead of a shared one",
           [this] { opt_.reuseport = true; });
  add_flag("--daemon", "detach from the terminal", [this] { opt_.daemon = true; });
  add_flag("--winch-with-terminal", "WINCH drains workers even with a controlling terminal",
           [this] { opt_.winch_with_terminal = true; });
  add("--control", "PATH", "control socket (default: <pid file>.sock)",
      [this](auto v) { opt_.control_socket = v; });
  add("--upgrade-timeout", "MS", "-s upgrade: give up if the new master is not ready after MS",
      [this](auto v) {
        opt_.upgrade_timeout = milliseconds(parse_number("--upgrade-timeout", v, 1, 86'400'000));
      });
  add_flag("--json", "-s status: print JSON", [this] { opt_.json = true; });
  add_flag("--no-wait", "-s reload: only send SIGHUP; do not wait for the outcome",
           [this] { opt_.no_wait = true; });
  add_flag("-t", "check the configuration (as a reload would load it) and exit",
           [this] { opt_.check_config = true; });
  add_flag("--check-config", "the same as -t", [this] { opt_.check_config = true; });
  add("-s", "COMMAND", "tell the running master: stop, quit, reload, reopen, upgrade, status",
      [this](auto v) {
        // The last -s wins, as with nginx: a signal and a query never both stand.
        opt_.signal.reset();
        opt_.query.clear();
        if (v == "status" || v == "upgrade" || v == "reload")
          return void(opt_.query = std::string(v));
        auto c = parse_command(v);
        if (!c)
          throw std::invalid_argument(fmt::format(
              "-s: unknown command '{}' (expected stop, quit, reload, reopen, upgrade or status)",
              v));
        opt_.signal = c;
      });
}

command_line& command_line::add(std::string name, std::string metavar, std::string help, handler h) {
  flags_.push_back({std::move(name), std::move(metavar), std::move(help), std::move(h), {}});
  return *this;
}

command_line& command_line::add_flag(std::string name, std::string help, std::function<void()> h) {
  flags_.push_back({std::move(name), {}, std::move(help), {}, std::move(h)});
  return *this;
}

std::optional<int> command_line::parse(int argc, const char* const* argv) {
  if (argc > 0 && argv[0]) {
    std::string_view p = argv[0];
    if (auto slash = p.rfind('/'); slash != std::string_view::npos) p.remove_prefix(slash + 1);
    if (!p.empty()) opt_.program_name = p;
  }
  try {
    for (int i = 1; i < argc; ++i) {
      std::string_view arg = argv[i];
      if (arg == "-h" || arg == "--help") {
        std::fputs(usage().c_str(), stdout);
        return 0;
      }
      std::optional<std::string_view> inline_value;
      if (auto eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
        inline_value = arg.substr(eq + 1);
        arg = arg.substr(0, eq);
      }
      auto f = std::find_if(flags_.begin(), flags_.end(),
                            [&](const flag& fl) { return fl.name == arg; });
      if (f == flags_.end())
        throw std::invalid_argument(fmt::format("unknown option '{}'", argv[i]));
      if (f->on_flag) {
        if (inline_value)
          throw std::invalid_argument(fmt::format("{} takes no value", f->name));
        f->on_flag();
        continue;
      }
      if (!inline_value) {
        if (i + 1 >= argc) throw std::invalid_argument(fmt::format("{} needs a value", f->name));
        inline_value = argv[++i];
      }
      f->on_value(*inline_value);
    }
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "%s: %s\nTry '%s --help'.\n", opt_.program_name.c_str(), e.what(),
                 opt_.program_name.c_str());
    return 2;
  }
  return std::nullopt;
}

std::string command_line::usage() const {
  std::string out = fmt::format("usage: {} [options]\n       {} -s COMMAND [--pid-file PATH]\n\n",
                                opt_.program_name, opt_.program_name);
  for (const auto& f : flags_) {
    std::string lhs = f.metavar.empty() ? f.name : f.name + " " + f.metavar;
    out += fmt::format("  {:<26} {}\n", lhs, f.help);
  }
  out += fmt::format("  {:<26} {}\n", "-h, --help", "show this help");
  return out;
}

}  // namespace procmodel
