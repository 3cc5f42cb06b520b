# mlcapsule_test(NAME SOURCES... LIBS ... LABELS ...): one GoogleTest binary beside the code it
# tests, registered with ctest under the given labels (unit by default; slow, fuzz are opt-in tiers).
function(mlcapsule_test name)
  cmake_parse_arguments(T "" "" "SOURCES;LIBS;LABELS" ${ARGN})
  if(NOT T_LABELS)
    set(T_LABELS unit)
  endif()
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main)
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES LABELS "${T_LABELS}"
    ENVIRONMENT "MLCAPSULE_SOURCE_DIR=${PROJECT_SOURCE_DIR};MLCAPSULE_BINARY_DIR=${PROJECT_BINARY_DIR}")
endfunction()
