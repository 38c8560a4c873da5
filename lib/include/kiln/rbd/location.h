// Glance's RBD locations: rbd://<fsid>/<pool>/<image>/<snapshot>.
//
// Glance's rbd store writes an image's location (its direct_url and
// locations[].url) as "rbd://" and four components, each percent-encoded by
// Python's urllib.parse.quote(component, safe=''): letters, digits and
// "_.-~" as themselves, every other byte as %XX with upper-case hex.
// parse_location reads exactly that and nothing else: a location that Glance
// could not have written (another scheme, a missing, empty or fifth
// component, lower-case or short escapes, an escaped unreserved character, a
// raw reserved one, bytes that are no name Ceph would give: a control
// character, '/', '@', non-ASCII) is refused with kRbdLocationInvalid, never
// guessed at: its components become librados calls. The fsid must be a UUID
// (compared with the cluster's in canonical lower-case form).
// Pure functions; thread-safe.
#pragma once

#include <string>
#include <string_view>

namespace kiln::rbd {

// An RBD snapshot named by a Glance location: <pool>/<image>@<snapshot> in
// the cluster whose fsid is `fsid`.
struct Location {
  std::string fsid;  // canonical lower-case UUID
  std::string pool;
  std::string image;
  std::string snapshot;

  std::string spec() const;  // "<pool>/<image>@<snapshot>", for messages and logs
  bool operator==(const Location&) const = default;
};

// The longest location accepted: Glance's are about 100 bytes.
inline constexpr std::size_t kMaxLocationLength = 1024;

// Throws kiln::Error kRbdLocationInvalid with the reason (the text quoted
// with its non-printable bytes escaped) for anything Glance would not write.
Location parse_location(std::string_view url);

// The location Glance would write for `location` (the inverse of parse_location).
std::string format_location(const Location& location);

}  // namespace kiln::rbd
