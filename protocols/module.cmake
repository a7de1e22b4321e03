# wanopt_module(): the one call a module folder's CMakeLists.txt makes.
#
#   wanopt_module(NAME <name> SOURCES <file>...
#                 [LIBS <target>...]        libraries the module links (protocols/common/...)
#                 [TESTS <file>...]         doctest files, compiled into unit_tests
#                 [FIXTURES_DIR <dir>]      the tests' data; WANOPT_MODULE_FIXTURES in them
#                 [TEST_ONLY])              registered in the test binaries, not in wanopt
#
# NAME is the module's name as config files write it and the inner-channel hello
# sends it (1..32 characters of [a-z0-9_-]). The module's sources get it as
# WANOPT_MODULE_NAME, for their ModuleRegistrar: copying a folder and changing NAME
# gives a second module (target wanopt_module_<name>).
#
# The module is an OBJECT library, so its static ModuleRegistrar is always linked
# in: wanopt_protocols carries the daemon's modules, wanopt_test_modules the
# TEST_ONLY ones (unit_tests and loopback_tests link both). Module tests (target
# wanopt_module_<name>_tests) keep the names they are given in their TEST_CASEs and
# run as "unit: <test case>" like every other unit test.
function(wanopt_module)
  cmake_parse_arguments(PARSE_ARGV 0 arg "TEST_ONLY" "NAME;FIXTURES_DIR" "SOURCES;LIBS;TESTS")
  if(arg_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "wanopt_module: unknown arguments ${arg_UNPARSED_ARGUMENTS}")
  endif()
  string(LENGTH "${arg_NAME}" length)
  if(NOT arg_NAME MATCHES "^[a-z0-9_-]+$" OR length GREATER 32)
    message(FATAL_ERROR "wanopt_module: NAME '${arg_NAME}' must be 1..32 characters of [a-z0-9_-]")
  endif()
  if(NOT arg_SOURCES)
    message(FATAL_ERROR "wanopt_module(${arg_NAME}): SOURCES is required")
  endif()
  set(target wanopt_module_${arg_NAME})
  get_filename_component(folder ${CMAKE_CURRENT_SOURCE_DIR} NAME)
  get_property(earlier GLOBAL PROPERTY WANOPT_MODULE_FOLDER_${arg_NAME})
  if(earlier)
    message(FATAL_ERROR "wanopt_module: protocols/${earlier} and protocols/${folder} are both module "
                        "'${arg_NAME}': change NAME in one")
  endif()
  set_property(GLOBAL PROPERTY WANOPT_MODULE_FOLDER_${arg_NAME} ${folder})

  add_library(${target} OBJECT ${arg_SOURCES})
  target_link_libraries(${target} PRIVATE wanopt_protocols_api ${arg_LIBS})
  target_compile_definitions(${target} PRIVATE WANOPT_MODULE_NAME="${arg_NAME}")
  if(arg_TEST_ONLY)
    set(collection wanopt_test_modules)
    set_target_properties(${target} PROPERTIES EXCLUDE_FROM_ALL ON)
  else()
    set(collection wanopt_protocols)
  endif()
  target_sources(${collection} INTERFACE $<TARGET_OBJECTS:${target}>)
  if(arg_LIBS)
    target_link_libraries(${collection} INTERFACE ${arg_LIBS})
  endif()

  if(arg_TESTS)
    # Built only when unit_tests is (WANOPT_TESTS), which takes their objects.
    add_library(${target}_tests OBJECT EXCLUDE_FROM_ALL ${arg_TESTS})
    target_link_libraries(${target}_tests PRIVATE wanopt_core doctest::doctest ${arg_LIBS})
    if(arg_FIXTURES_DIR)
      cmake_path(ABSOLUTE_PATH arg_FIXTURES_DIR BASE_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR} OUTPUT_VARIABLE fixtures)
      target_compile_definitions(${target}_tests PRIVATE WANOPT_MODULE_FIXTURES="${fixtures}")
    endif()
    set_property(GLOBAL APPEND PROPERTY WANOPT_MODULE_TEST_TARGETS ${target}_tests)
  endif()
  # Tells protocols/CMakeLists.txt that this folder was a module.
  set_property(DIRECTORY PROPERTY WANOPT_MODULE ${arg_NAME})
endfunction()
