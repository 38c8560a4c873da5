// What the image cache may fetch, how it verifies, and how much it may keep.
//
// Every field is a setting of the [glance] or [image_cache] config sections
// (see kiln/config/settings.h); defaults are what an operator would expect
// from Nova, plus the limits Nova lacks (a size budget, a free-space reserve).
#pragma once

#include <chrono>
#include <cstdint>
#include <set>
#include <string>

#include "kiln/image/converter.h"
#include "kiln/image/inspector.h"
#include "kiln/image/signature.h"

namespace kiln::cache {

struct CachePolicy {
  // Refused before any byte is fetched when not listed.
  std::set<std::string> allowed_disk_formats{"raw", "qcow2", "vmdk", "vdi", "vhd", "vhdx",
                                             "iso", "ami", "aki", "ari"};
  std::set<std::string> allowed_container_formats{"bare", "ami", "aki", "ari"};
  // md5 is checked only when Glance gives no os_hash_value (as
  // python-glanceclient does), unless this is set.
  bool verify_md5_always = false;

  // Image safety: what the inspector refuses before qemu-img sees a
  // download, and the limits qemu-img converts under.
  image::InspectorPolicy inspector;
  image::ConversionLimits conversion;
  // Signed images (img_signature*) are verified as they stream when
  // verify_signatures is set; `signatures.required` refuses unsigned ones.
  bool verify_signatures = false;
  image::SignaturePolicy signatures;

  // A download stops the moment it passes the size Glance recorded; when
  // Glance recorded none, at this many bytes (0 = no bound). 64 GiB: above
  // any cloud image a Glance serves in practice (Windows images are 20-40 GiB),
  // well below what fills a compute node's disk, so a server that streams
  // forever without a size costs at most that. kImageTooLarge.
  std::uint64_t max_download_bytes = 64ULL << 30;

  // Tests only, never a setting: each turns one wall off to show that the
  // walls behind it still hold (issue 12). kiln itself never clears them.
  bool inspect_images = true;        // the native inspector: inspect_file + require_safe
  bool ask_qemu_second_opinion = true;  // image::require_qemu_agrees

  // A qcow2 image is converted while it downloads (image::Qcow2Stream) when
  // it is of the common kind; off, or for any other kind, qemu-img converts
  // it after the download. Either way every check runs before publication.
  bool stream_qcow2 = true;
  // Compressed clusters decompressed while streaming, on one worker thread
  // per core (image::Qcow2Stream). Off: the stream gives up at the first
  // compressed cluster and qemu-img converts the image after the download.
  bool stream_compressed_qcow2 = true;

  // Download retries (with Range resume) after a dropped or stalled
  // connection, and the first backoff, doubled each time.
  unsigned download_retries = 3;
  std::chrono::milliseconds retry_backoff{std::chrono::seconds(1)};

  // Left free on the filesystem after the download and conversion.
  std::uint64_t reserved_bytes = 1ULL << 30;

  // Aging (Nova's remove_unused_original_minimum_age_seconds): an unused base
  // may go once its last use is older than this. Swap bases likewise.
  std::chrono::seconds unused_minimum_age{86400};
  // Size budget for _base (0 = none): least recently used unused bases go
  // first until the cache fits. The smaller of the two limits applies.
  std::uint64_t max_cache_bytes = 0;
  unsigned max_cache_percent = 0;  // of the filesystem's size
  // Nova's switch: false and aging removes nothing. The budget and making
  // room for a download only ever take bases kiln made (with a kiln .info).
  bool remove_unused_base_images = true;
  // Making room for a download takes only unused bases whose last use is
  // older than this: a base fetched a moment ago (a pre-cache, or kilnd's
  // fetch just before the boot's own lease) is about to be used. 10 minutes
  // covers the longest gap between the two in a queued boot.
  std::chrono::seconds eviction_minimum_age{600};

  // The longest wait for a base's lock. The holder may be downloading and
  // converting the largest image kiln accepts (max_download_bytes, 64 GiB: at
  // 200 Mbit/s about 45 minutes), so an hour; a holder stuck longer is a bug
  // an operator must hear about (kLockFailed names its pid), not a wait.
  std::chrono::seconds lock_timeout{3600};
  // A failed download's record (locks/kiln-<name>.failed) lets those who
  // waited for it share its error; after this long it only takes room, and
  // repair removes it. 10 minutes: far longer than a waiter takes to read it.
  std::chrono::seconds failed_download_ttl{600};

  // How long lookup() may answer from a record Glance gave earlier (0: always
  // ask Glance). A boot of a cached image otherwise spends most of its time on
  // that GET (13 ms of 24 in tools/bench/boot.sh); the cost of a TTL is that
  // an image deactivated or deleted in Glance still boots from cache until its
  // record expires. Image data never changes once active, so bases are safe.
  std::chrono::seconds image_record_ttl{0};
};

}  // namespace kiln::cache
