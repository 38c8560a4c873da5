#include "kiln/util/layout.h"

#include <algorithm>
#include <random>

#include "kiln/util/hash.h"
#include "kiln/util/uuid.h"

namespace kiln::layout {

namespace fs = std::filesystem;

namespace {

constexpr std::size_t kUuidLength = 36;
constexpr std::size_t kSha1HexLength = 40;
constexpr std::size_t kMkdtempSuffixLength = 6;  // the XXXXXX mkdtemp(3) fills in

bool starts_with(std::string_view text, std::string_view prefix) {
  return text.size() >= prefix.size() && text.compare(0, prefix.size(), prefix) == 0;
}

bool ends_with(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool all_of(std::string_view text, std::string_view allowed) {
  return !text.empty() && text.find_first_not_of(allowed) == std::string_view::npos;
}

constexpr std::string_view kDigits = "0123456789";
constexpr std::string_view kLowerHex = "0123456789abcdef";

// ".<uuid><infix>XXXXXX" -> uuid, when the name has that shape.
std::optional<std::string> instance_temporary(std::string_view name, std::string_view infix) {
  if (name.size() != 1 + kUuidLength + infix.size() + kMkdtempSuffixLength || name[0] != '.') return std::nullopt;
  std::string_view uuid = name.substr(1, kUuidLength);
  if (name.substr(1 + kUuidLength, infix.size()) != infix || !is_instance_directory_name(uuid)) return std::nullopt;
  return std::string(uuid);
}

// "<size>" or "<size>_<7 hex>": the parts of nova's swap and ephemeral names.
bool swap_base(std::string_view name) {
  return starts_with(name, kSwapBasePrefix) && all_of(name.substr(kSwapBasePrefix.size()), kDigits);
}

bool ephemeral_base(std::string_view name) {
  if (!starts_with(name, kEphemeralBasePrefix)) return false;
  std::string_view rest = name.substr(kEphemeralBasePrefix.size());
  auto underscore = rest.find('_');
  return underscore != std::string_view::npos && all_of(rest.substr(0, underscore), kDigits) &&
         rest.size() - underscore - 1 == kEphemeralDigestLength && all_of(rest.substr(underscore + 1), kLowerHex);
}

std::optional<Kind> base_kind(std::string_view name) {
  if (name.size() == kSha1HexLength && all_of(name, kLowerHex)) return Kind::kImageBase;
  if (swap_base(name)) return Kind::kSwapBase;
  if (ephemeral_base(name)) return Kind::kEphemeralBase;
  return std::nullopt;
}

// "<base><suffix>" whose <base> is a base's name.
std::optional<std::string> base_with_suffix(std::string_view name, std::string_view suffix) {
  if (!ends_with(name, suffix)) return std::nullopt;
  std::string_view base = name.substr(0, name.size() - suffix.size());
  if (!base_kind(base)) return std::nullopt;
  return std::string(base);
}

std::optional<ParsedName> parse_top(std::string_view name) {
  if (name == kBaseDirectory) return ParsedName{Kind::kBaseDirectory, ""};
  if (name == kLockDirectory) return ParsedName{Kind::kLockDirectory, ""};
  if (name == kOperationJournal) return ParsedName{Kind::kOperationJournal, ""};
  if (is_instance_directory_name(name)) return ParsedName{Kind::kInstanceDirectory, std::string(name)};
  if (auto uuid = instance_temporary(name, kBuildingInfix)) return ParsedName{Kind::kBuilding, *uuid};
  if (auto uuid = instance_temporary(name, kDeletingInfix)) return ParsedName{Kind::kDeleting, *uuid};
  if (starts_with(name, kDirectIoProbePrefix) && all_of(name.substr(kDirectIoProbePrefix.size()), kDigits)) {
    return ParsedName{Kind::kDirectIoProbe, ""};
  }
  return std::nullopt;
}

std::optional<ParsedName> parse_base_directory(std::string_view name) {
  if (auto kind = base_kind(name)) return ParsedName{*kind, std::string(name)};
  if (auto base = base_with_suffix(name, kInfoSuffix)) return ParsedName{Kind::kInfo, *base};
  if (auto base = base_with_suffix(name, kPartSuffix)) return ParsedName{Kind::kPart, *base};
  if (auto base = base_with_suffix(name, kConvertedSuffix)) return ParsedName{Kind::kConverted, *base};
  // ".<base>.converted.sandbox-XXXXXX"
  if (name.size() > 1 + kSandboxInfix.size() + kMkdtempSuffixLength && name[0] == '.') {
    std::string_view inner = name.substr(1, name.size() - 1 - kSandboxInfix.size() - kMkdtempSuffixLength);
    if (name.substr(1 + inner.size(), kSandboxInfix.size()) == kSandboxInfix) {
      if (auto base = base_with_suffix(inner, kConvertedSuffix)) return ParsedName{Kind::kConversionSandbox, *base};
    }
  }
  // "<any name of kiln's in _base>.tmp": a base's .info being rewritten.
  if (ends_with(name, kAtomicTemporarySuffix)) {
    std::string_view final_name = name.substr(0, name.size() - kAtomicTemporarySuffix.size());
    auto inner = parse_base_directory(final_name);
    if (inner && inner->kind != Kind::kAtomicTemporary) return ParsedName{Kind::kAtomicTemporary, std::string(final_name)};
  }
  return std::nullopt;
}

std::optional<ParsedName> parse_locks(std::string_view name) {
  if (name == kAgentLock) return ParsedName{Kind::kAgentLock, ""};
  if (starts_with(name, kInstanceLockPrefix) && is_instance_directory_name(name.substr(kInstanceLockPrefix.size()))) {
    return ParsedName{Kind::kInstanceLock, std::string(name.substr(kInstanceLockPrefix.size()))};
  }
  if (starts_with(name, kNovaLockPrefix) && name.size() > kNovaLockPrefix.size()) {
    return ParsedName{Kind::kNovaLock, std::string(name.substr(kNovaLockPrefix.size()))};
  }
  if (!starts_with(name, kBaseLockPrefix)) return std::nullopt;
  std::string_view rest = name.substr(kBaseLockPrefix.size());
  if (base_kind(rest)) return ParsedName{Kind::kBaseLock, std::string(rest)};
  if (auto base = base_with_suffix(rest, kFailureSuffix)) return ParsedName{Kind::kFailureRecord, *base};
  // "kiln-<base>.failed.tmp": a failure record a crash cut short.
  if (ends_with(rest, kAtomicTemporarySuffix)) {
    std::string_view final_name = name.substr(0, name.size() - kAtomicTemporarySuffix.size());
    auto inner = parse_locks(final_name);
    if (inner && inner->kind == Kind::kFailureRecord) return ParsedName{Kind::kAtomicTemporary, std::string(final_name)};
  }
  return std::nullopt;
}

std::optional<ParsedName> parse_member(std::string_view name) {
  static constexpr std::pair<std::string_view, Kind> kMembers[] = {
      {kRootDisk, Kind::kRootDisk},       {kEphemeralDisk, Kind::kEphemeralDisk},
      {kSwapDisk, Kind::kSwapDisk},       {kDiskInfo, Kind::kDiskInfo},
      {kConsoleLog, Kind::kConsoleLog},   {kLibvirtXml, Kind::kLibvirtXml},
      {kNvram, Kind::kNvram},             {kProvisioningMarker, Kind::kProvisioningMarker},
      {kDeletionMarker, Kind::kDeletionMarker},
  };
  for (const auto& [member_name, kind] : kMembers) {
    if (name == member_name) return ParsedName{kind, ""};
  }
  return std::nullopt;
}

std::string cat(std::string_view a, std::string_view b) {
  std::string joined(a);
  joined += b;
  return joined;
}

}  // namespace

std::optional<ParsedName> parse(Place place, std::string_view name) {
  switch (place) {
    case Place::kInstancesPath: return parse_top(name);
    case Place::kBaseDirectory: return parse_base_directory(name);
    case Place::kLockDirectory: return parse_locks(name);
    case Place::kInstanceDirectory: return parse_member(name);
  }
  return std::nullopt;
}

bool is_instance_directory_name(std::string_view name) {
  // is_canonical_uuid() accepts upper case too; a directory name is the
  // lowercase form normalize_uuid() gives, so exactly one name per instance.
  return name.size() == kUuidLength && is_canonical_uuid(name) &&
         std::none_of(name.begin(), name.end(), [](char c) { return c >= 'A' && c <= 'Z'; });
}

bool may_hold_base_users(std::string_view name) { return name != kBaseDirectory && name != kLockDirectory; }

fs::path base_directory(const fs::path& instances_path) { return instances_path / kBaseDirectory; }
fs::path lock_directory(const fs::path& instances_path) { return instances_path / kLockDirectory; }
fs::path operation_journal_path(const fs::path& instances_path) { return instances_path / kOperationJournal; }
fs::path agent_lock_path(const fs::path& instances_path) { return lock_directory(instances_path) / kAgentLock; }

fs::path instance_directory(const fs::path& instances_path, const std::string& uuid) { return instances_path / uuid; }

std::string building_template(const fs::path& instances_path, const std::string& uuid) {
  return (instances_path / ("." + uuid + std::string(kBuildingInfix) + "XXXXXX")).string();
}

std::string deleting_template(const fs::path& instances_path, const std::string& uuid) {
  return (instances_path / ("." + uuid + std::string(kDeletingInfix) + "XXXXXX")).string();
}

std::string direct_io_probe_name() {
  std::random_device random;
  return cat(kDirectIoProbePrefix, std::to_string(random()));
}

std::string image_base_name(std::string_view image_id) { return hex_digest_of("sha1", image_id); }

std::string swap_base_name(std::uint64_t size_mb) { return cat(kSwapBasePrefix, std::to_string(size_mb)); }

std::string ephemeral_base_name(std::uint64_t size_gb, std::string_view filesystem) {
  std::string digest = hex_digest_of("md5", filesystem).substr(0, kEphemeralDigestLength);
  return cat(kEphemeralBasePrefix, std::to_string(size_gb) + "_" + digest);
}

fs::path base_path(const fs::path& instances_path, const std::string& base_name) {
  return base_directory(instances_path) / base_name;
}

fs::path info_path(const fs::path& base) { return cat(base.string(), kInfoSuffix); }
fs::path part_path(const fs::path& base) { return cat(base.string(), kPartSuffix); }
fs::path converted_path(const fs::path& base) { return cat(base.string(), kConvertedSuffix); }
fs::path atomic_temporary_path(const fs::path& final_path) { return cat(final_path.string(), kAtomicTemporarySuffix); }

std::string sandbox_template(const fs::path& final_path) {
  fs::path parent = final_path.has_parent_path() ? final_path.parent_path() : fs::path(".");
  return (parent / ("." + final_path.filename().string() + std::string(kSandboxInfix) + "XXXXXX")).string();
}

std::string base_lock_name(const std::string& base_name) { return cat(kBaseLockPrefix, base_name); }

fs::path base_lock_path(const fs::path& instances_path, const std::string& base_name) {
  return lock_directory(instances_path) / base_lock_name(base_name);
}

fs::path failure_record_path(const fs::path& instances_path, const std::string& base_name) {
  return cat(base_lock_path(instances_path, base_name).string(), kFailureSuffix);
}

fs::path instance_lock_path(const fs::path& instances_path, const std::string& uuid) {
  return lock_directory(instances_path) / cat(kInstanceLockPrefix, uuid);
}

fs::path nova_lock_path(const fs::path& instances_path, const std::string& name) {
  return lock_directory(instances_path) / cat(kNovaLockPrefix, name);
}

fs::path member(const fs::path& directory, std::string_view name) { return directory / name; }

}  // namespace kiln::layout
