# Tests of lib/rpc and of the kilnd binary; included from tests/CMakeLists.txt.
