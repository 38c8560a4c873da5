// kilnd, the agent controllers talk to. The RPC server, operations and
// systemd integration arrive with the agent issue; until then kilnd only
// states what it is, so the build and packaging have a target to carry.
#include <cstdio>

int main() {
  std::fputs("kilnd 0.1.0: the RPC agent is not built yet; use kilnctl\n", stderr);
  return 2;
}
