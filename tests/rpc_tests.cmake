# Tests of lib/rpc and of the kilnd binary; included from tests/CMakeLists.txt.

# Fast: lib/rpc in-process (test:///default, no peers).
add_executable(kiln_rpc_unit_tests rpc/test_rpc_validation.cpp rpc/test_rpc_server.cpp rpc/raw_connection.cpp)
target_link_libraries(kiln_rpc_unit_tests PRIVATE kiln_test_support Boost::headers Threads::Threads)
catch_discover_tests(kiln_rpc_unit_tests TEST_PREFIX "rpc: " PROPERTIES TIMEOUT 120)
