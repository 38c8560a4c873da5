# Tests of systemd units, the config schema and packaging; included from tests/CMakeLists.txt.
