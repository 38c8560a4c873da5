// Failpoints: named places where a test build can make kiln die on purpose.
//
// KILN_FAILPOINT("boot.root.overlay_created") marks a point between two steps
// whose crash-safety matters. In a build with KILN_FAILPOINTS (CMake option,
// on in KILN_TESTS builds) the process reads KILN_FAILPOINT=<name>[:<count>]
// from its environment once; when the named point is reached for the
// <count>-th time (default 1) it writes "kiln failpoint <name> reached" to
// stderr and kills itself with SIGKILL: no destructor, no atexit handler, no
// buffered write runs, as after a power cut of the process. Without
// KILN_FAILPOINTS the macro expands to nothing: release builds pay nothing.
//
// Names are "<operation>.<step>" string literals; the crash matrix test
// (tests/crash) finds every one in the sources and kills at each.
// Thread-safe: the count is atomic.
#pragma once

#if defined(KILN_FAILPOINTS) && KILN_FAILPOINTS

namespace kiln::failpoint {

// Dies here when KILN_FAILPOINT arms `name` and this is its count-th passage.
void reached(const char* name) noexcept;

// The name KILN_FAILPOINT arms, or "" (for messages and tests).
const char* armed() noexcept;

}  // namespace kiln::failpoint

#define KILN_FAILPOINT(name) ::kiln::failpoint::reached(name)

#else

#define KILN_FAILPOINT(name) ((void)0)

#endif
