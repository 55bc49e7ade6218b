# consumer_program(<name> LINK <target>... [FMT_HEADER_ONLY] [COMPILED]):
# program/consumer.cpp as the executable <name>, told what to expect (see there).
function(consumer_program name)
  cmake_parse_arguments(PARSE_ARGV 1 arg "FMT_HEADER_ONLY;COMPILED" "" "LINK")
  add_executable(${name} ${CMAKE_CURRENT_FUNCTION_LIST_DIR}/consumer.cpp)
  target_compile_definitions(${name} PRIVATE
    CONSUMER_FMT_HEADER_ONLY=$<BOOL:${arg_FMT_HEADER_ONLY}>
    CONSUMER_COMPILED=$<BOOL:${arg_COMPILED}>)
  target_link_libraries(${name} PRIVATE ${arg_LINK})
endfunction()
