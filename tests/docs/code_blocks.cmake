# procmodel_extract_code_blocks(<markdown> <out_dir> <stem> <sources_var>)
#
# Writes every ```cpp block of <markdown> to <out_dir>/<stem>_<N>.cpp (N from
# 1, in order) and appends the files to <sources_var>. A `#line` directive
# makes the compiler's messages name the markdown file and line.
#
# The convention (CONTRIBUTING.md, "Code in the documentation"):
#   - a ```cpp block is a whole translation unit, compiled as it stands;
#   - a block right after a `<!-- fragment -->` comment is statements: it is
#     compiled as the body of a function returning int, after #include <procmodel/procmodel.hpp>
#     and the Asio headers the documentation uses;
#   - `<!-- fragment declarations -->`: namespace-scope declarations, after
#     the same includes;
#   - whatever the comment holds after its first line (up to `-->`) is code
#     put before the block at namespace scope, for the names a fragment uses
#     and does not show (`struct my_worker {...};`).
#     A context line `// parameters: T a, U b` makes a and b the function's
#     parameters: locals the fragment uses (a lambda may capture them).
#   - ```cpp ignore ... ``` (rare: output, pseudo-code) is not compiled.

set(PROCMODEL_FRAGMENT_PRELUDE [=[
#include <procmodel/procmodel.hpp>
#include <procmodel/supervisor.hpp>

#include <array>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>

namespace asio = boost::asio;
using asio::ip::tcp;
using namespace std::chrono_literals;
]=])

function(procmodel_extract_code_blocks markdown out_dir stem sources_var)
  file(READ ${markdown} text)
  # A fence starts a line: ```cpp in running text (`` ```cpp ``) is not one.
  set(text "\n${text}")
  set(sources ${${sources_var}})
  set(offset 0)       # of `rest` in `text`
  set(rest "${text}")
  set(index 0)
  while(1)
    string(FIND "${rest}" "\n```cpp" open)
    if(open LESS 0)
      break()
    endif()
    math(EXPR open "${open} + 1")
    # The info string: "```cpp", "```cpp fragment", "```cpp ignore".
    string(SUBSTRING "${rest}" ${open} -1 from_open)
    string(FIND "${from_open}" "\n" eol)
    string(SUBSTRING "${from_open}" 0 ${eol} info)
    math(EXPR body_begin "${eol} + 1")
    string(SUBSTRING "${from_open}" ${body_begin} -1 after_info)
    string(FIND "${after_info}" "\n```" close)
    if(close LESS 0)
      message(FATAL_ERROR "${markdown}: a ```cpp block is never closed")
    endif()
    math(EXPR close_incl "${close} + 1")
    string(SUBSTRING "${after_info}" 0 ${close_incl} code)

    # The text before the block: its line number, and a fragment comment
    # ending right before it (only blank space between).
    math(EXPR block_pos "${offset} + ${open}")
    string(SUBSTRING "${text}" 0 ${block_pos} before)
    string(REGEX MATCHALL "\n" newlines "${before}")
    list(LENGTH newlines line)
    math(EXPR line "${line} + 1")  # the line after the fence (text starts with an extra newline)
    set(kind unit)
    set(context "")
    if(info MATCHES "ignore")
      set(kind ignore)
    elseif(info MATCHES "fragment")
      set(kind statements)
    endif()
    string(REGEX MATCH "<!--[ \t]*fragment([^\n>-]*)\n?(([^-]|-[^-]|--[^>])*)-->[ \t\n]*$" comment "${before}")
    if(comment)
      set(words "${CMAKE_MATCH_1}")
      set(context "${CMAKE_MATCH_2}")
      if(words MATCHES "declarations")
        set(kind declarations)
      else()
        set(kind statements)
      endif()
    endif()

    if(NOT kind STREQUAL "ignore")
      math(EXPR index "${index} + 1")
      set(source ${out_dir}/${stem}_${index}.cpp)
      set(header "// Generated from ${markdown}, block ${index} (${kind}): see tests/docs/code_blocks.cmake.\n")
      if(kind STREQUAL "unit")
        set(content "${header}#line ${line} \"${markdown}\"\n${code}")
      elseif(kind STREQUAL "declarations")
        set(content "${header}${PROCMODEL_FRAGMENT_PRELUDE}\n${context}\n#line ${line} \"${markdown}\"\n${code}")
      else()
        # "// parameters: T a, U b" in the context: the fragment's locals.
        set(parameters "")
        if(context MATCHES "// parameters: ([^\n]*)")
          set(parameters "${CMAKE_MATCH_1}")
        endif()
        set(content "${header}${PROCMODEL_FRAGMENT_PRELUDE}\n${context}\n[[maybe_unused]] static int procmodel_doc_fragment(${parameters}) {\n#line ${line} \"${markdown}\"\n${code}  return 0;\n}\n")
      endif()
      file(CONFIGURE OUTPUT ${source} CONTENT "${content}" @ONLY)
      list(APPEND sources ${source})
    endif()

    math(EXPR consumed "${open} + ${body_begin} + ${close_incl} + 3")
    math(EXPR offset "${offset} + ${consumed}")
    string(SUBSTRING "${text}" ${offset} -1 rest)
  endwhile()
  set(${sources_var} ${sources} PARENT_SCOPE)
endfunction()
